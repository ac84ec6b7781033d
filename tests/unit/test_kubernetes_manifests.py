"""deploy/kubernetes/ as a cluster would take it, with no cluster: both overlays and both
job templates rendered by kustomize (kubectl's), every object checked against the
KubeRay CRDs' schemas (tests/data/kuberay/) or Kubernetes' own, and what the services
need checked in what was rendered: every setting an operator must set is there, secrets
only in the Secret, every Ray pod reads both, the probes, requests and image pins
(the Serve config: test_kubernetes_serve_config.py)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from services.config import Settings
from services.jobs.ray_jobs import carries_credentials
from tests.kubernetes import (
    DEPLOY,
    JOBS,
    OVERLAYS,
    Objects,
    Rendered,
    config_and_secret,
    core_errors,
    crd_errors,
    deploy_copy,
    one,
    pod_templates,
    render,
    render_all,
)

SECRETS_DIR_VAR = "COLECIONADOR_SECRETS_DIR"
# Settings whose default is right on a cluster, each with why; every other field of
# Settings must be given by the ConfigMap or the Secret of every overlay.
SAFE_DEFAULTS = {
    "home": "caches and the embedded fallbacks, on the pod's own disk",
    "auto_migrate": "the first service up migrates the database",
    "s3_region": "us-east-1 unless the store says otherwise",
    "requests_queue": "DESIGN.md's queue names",
    "events_queue": "DESIGN.md's queue names",
    "promotions_queue": "DESIGN.md's queue names",
    "publish_events": "events are published",
    "ray_auth_token_path": "KubeRay gives every pod RAY_AUTH_TOKEN (authOptions)",
    "api_read_token": "optional: reads are open without it",
    "api_writers": "optional: named write tokens",
    "api_upload_mb": "a limit with a default",
    "max_job_attempts": "a limit with a default",
    "max_job_seconds": "a limit with a default",
    "max_tuning_epochs": "a limit with a default",
    "reconcile_interval_s": "a period with a default",
    "dataset_roots": "the store's datasets/ and the home's",
    "plugin_modules": "none: no request names code",
    "stream_min_images": "a threshold with a default",
    "decode_memory_mb": "a limit with a default",
    "gate_min_accuracy": "the operator's floor has a default",
    "gate_min_precision": "the operator's floor has a default",
    "gate_min_recall": "the operator's floor has a default",
    "max_failures": "a limit with a default",
    "worker_resources": "none: a Train worker asks Ray for a CPU, or a GPU on a GPU cluster",
    "api_resources": "the head by default (beside the ingress actor)",
    "predict_resources": "none: predict replicas go where Serve has room",
    "predict_max_replicas_per_node": "none: Serve places replicas where they fit",
    "driver_resources": "the head by default (where the data sets and the settings are)",
    "mlflow_tracking_uri": "none: MLflow tracking is optional (docs/operations/mlflow.md)",
    "mlflow_timeout_s": "a timeout with a default",
}
# Secret keys that are not settings: Ray's cluster token, the password of the Redis that
# keeps the GCS (gpu), and the trial servers' passwords.
OTHER_SECRET_KEYS = {
    "auth_token",
    "redis_password",
    "trial_postgres_password",
    "trial_rabbitmq_password",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render_all(tmp_path_factory.mktemp("deploy"))


def _secret_fields() -> set[str]:
    return {n for n, f in Settings.model_fields.items() if SecretStr in _types(f.annotation)}


def _types(annotation: Any) -> tuple[Any, ...]:
    return getattr(annotation, "__args__", (annotation,))


# ---------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("name", [*OVERLAYS, *(f"jobs/{j}" for j in JOBS)])
def test_every_object_meets_its_schema(rendered: Rendered, name: str):
    objs = rendered[name]
    kinds = {o["kind"] for o in objs}
    expected = {"Namespace", "ConfigMap", "Secret", "RayCluster", "RayService", "RayJob"}
    assert (expected if not name.startswith("jobs/") else {"RayJob"}) <= kinds
    assert [e for o in objs for e in errors_of(o)] == []


def errors_of(obj: dict[str, Any]) -> list[str]:
    return crd_errors(obj) if obj["apiVersion"].startswith("ray.io/") else core_errors(obj)


def test_the_schema_check_finds_mistakes(rendered: Rendered):
    """Not a check that passes everything: a misspelt field, a wrong type, a value the
    CRD does not allow, a pod template Kubernetes refuses, a bad core object."""
    cluster = one(rendered["gpu"], "RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    assert "'maxReplica' was unexpected" in " ".join(crd_errors(bad))
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["minReplicas"] = "0"
    assert "is not of type 'integer'" in " ".join(crd_errors(bad))
    bad = copy.deepcopy(cluster)
    bad["spec"]["authOptions"]["mode"] = "password"
    assert crd_errors(bad)
    bad = copy.deepcopy(cluster)
    del bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    assert "'name' is a required property" in " ".join(crd_errors(bad))
    bad = copy.deepcopy(cluster)
    bad["spec"]["gcsFaultToleranceOptions"]["backend"] = "memcached"
    assert "is not one of ['redis', 'rocksdb']" in " ".join(crd_errors(bad))
    bad = copy.deepcopy(cluster)
    bad["spec"]["gcsFaultToleranceOptions"]["redisPasword"] = {"value": "x"}
    assert "'redisPasword' was unexpected" in " ".join(crd_errors(bad))
    config = copy.deepcopy(one(rendered["gpu"], "ConfigMap"))
    config["data"]["COLECIONADOR_WORKERS"] = 2
    assert core_errors(config)


def test_nothing_renders_without_the_secrets_file(tmp_path: Path):
    """A deploy whose secrets.env was not made fails at once, never with empty secrets."""
    copy_root = deploy_copy(tmp_path)
    (copy_root / "overlays" / "gpu" / "secrets.env").unlink()
    with pytest.raises(subprocess.CalledProcessError) as e:
        render(copy_root / "overlays" / "gpu")
    assert "secrets.env" in e.value.stderr


# ---------------------------------------------------------------------------- settings
def test_the_safe_defaults_are_settings():
    assert set(SAFE_DEFAULTS) <= set(Settings.model_fields)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_an_operator_must_set_is_given(rendered: Rendered, overlay: str):
    config, secret = config_and_secret(rendered[overlay])
    given = {
        k.removeprefix("COLECIONADOR_").lower() for k in config if k.startswith("COLECIONADOR_")
    }
    given |= {k.removeprefix("colecionador_") for k in secret if k.startswith("colecionador_")}
    must = set(Settings.model_fields) - set(SAFE_DEFAULTS)
    assert must - given == set()
    assert {"database_url", "broker_url", "store_url", "s3_secret_key", "api_token"} <= must


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_key_names_a_setting(rendered: Rendered, overlay: str):
    """A misspelt key would be ignored by the services without a word."""
    config, secret = config_and_secret(rendered[overlay])
    fields = set(Settings.model_fields)
    for key in config:
        if key.startswith("COLECIONADOR_") and key != SECRETS_DIR_VAR:
            assert key.removeprefix("COLECIONADOR_").lower() in fields, key
        else:
            assert key == SECRETS_DIR_VAR or key.startswith("RAY_"), key
    for key in secret:
        assert key.removeprefix("colecionador_") in fields or key in OTHER_SECRET_KEYS, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_only_in_the_secret(rendered: Rendered, overlay: str):
    objs = rendered[overlay]
    config, secret = config_and_secret(objs)
    secret_fields = _secret_fields()
    assert {"database_url", "broker_url", "s3_secret_key", "api_token"} <= secret_fields
    in_config = {k.removeprefix("COLECIONADOR_").lower() for k in config}
    assert in_config & secret_fields == set()
    assert [v for v in config.values() if carries_credentials(v)] == []
    for key in secret:
        name = key.removeprefix("colecionador_")
        assert name in secret_fields or key in OTHER_SECRET_KEYS, f"{key} is not secret"
    # no secret value anywhere else: labels, entrypoints, runtime_env, the Serve config
    elsewhere = yaml.safe_dump_all([o for o in objs if o["kind"] != "Secret"])
    assert [k for k, v in secret.items() if len(v) >= 8 and v in elsewhere] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_pod_reads_them_as_the_services_do(rendered: Rendered, overlay: str, tmp_path: Path):
    """The ConfigMap as the environment and the Secret as files in the secrets folder, as
    Kubernetes gives them to a pod: Settings (in a fresh process, since the folder is
    read at import) sees every value."""
    import json
    import os
    import sys

    config, secret = config_and_secret(rendered[overlay])
    for key, value in secret.items():
        (tmp_path / key).write_text(value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLECIONADOR_")}
    env |= config | {SECRETS_DIR_VAR: str(tmp_path), "COLECIONADOR_HOME": str(tmp_path / "h")}
    code = (
        "import json; from services.config import Settings; s = Settings();"
        "print(json.dumps({k: getattr(v, 'get_secret_value', lambda: v)() for k, v in"
        " s.model_dump(exclude_none=True).items()}, default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    for key, value in secret.items():
        if key.startswith("colecionador_"):
            assert seen[key.removeprefix("colecionador_")] == value, key
    assert seen["store_url"] == config["COLECIONADOR_STORE_URL"]
    assert seen["ray_dashboard_url"] == config["COLECIONADOR_RAY_DASHBOARD_URL"]


def test_the_secrets_files_stay_out_of_git():
    if not (DEPLOY.parents[1] / ".git").exists():
        pytest.skip("not a git checkout")
    for overlay in OVERLAYS:
        path = DEPLOY / "overlays" / overlay / "secrets.env"
        done = subprocess.run(["git", "-C", str(DEPLOY), "check-ignore", "-q", str(path)])
        assert done.returncode == 0, f"{path} is not ignored by git"


@pytest.mark.parametrize("name", ["gpu", *(f"jobs/{j}" for j in JOBS)])
def test_a_rayjob_runtime_env_carries_no_secret(rendered: Rendered, name: str):
    secret_vars = {f"COLECIONADOR_{f.upper()}" for f in _secret_fields()}
    for job in (o for o in rendered[name] if o["kind"] == "RayJob"):
        env = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}").get("env_vars", {})
        assert set(env) & secret_vars == set()
        assert [v for v in env.values() if carries_credentials(str(v))] == []
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "colecionador"}


# ---------------------------------------------------------------------------- pods
def ray_objects(objs: Objects) -> Objects:
    return [o for o in objs if o["apiVersion"] == "ray.io/v1"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_reads_the_settings_and_the_secrets(rendered: Rendered, overlay: str):
    objs = rendered[overlay]
    config_name = one(objs, "ConfigMap")["metadata"]["name"]
    secret = one(objs, "Secret")
    secrets_dir = one(objs, "ConfigMap")["data"][SECRETS_DIR_VAR]
    templates = [t for o in ray_objects(objs) for t in pod_templates(o)]
    assert len(templates) == 4  # two clusters, a head and a worker group each
    for where, template in templates:
        spec = template["spec"]
        volumes = {
            v["name"]
            for v in spec["volumes"]
            if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
        }
        for c in spec["containers"]:
            refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            assert refs == [config_name], where
            mounts = [m for m in c["volumeMounts"] if m["name"] in volumes]
            assert [m["mountPath"] for m in mounts] == [secrets_dir], where
            assert all(m["readOnly"] for m in mounts)
    for obj in ray_objects(objs):
        cluster = obj["spec"].get("rayClusterConfig", obj["spec"])
        if "headGroupSpec" in cluster:
            assert cluster["authOptions"] == {
                "mode": "token",
                "secretName": secret["metadata"]["name"],
            }
    assert "auth_token" in config_and_secret(objs)[1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(rendered: Rendered, overlay: str):
    """Serving pods are ready when the API answers /healthz through them; no liveness
    probe asks the API (a database outage must not restart the nodes), nor does a head's
    readiness (KubeRay deploys the applications only once the head is ready)."""
    from services.api.routes.health import router

    assert "/healthz" in {r.path for r in router.routes}
    serving = 0
    for obj in ray_objects(rendered[overlay]):
        for where, template in pod_templates(obj):
            (ray,) = template["spec"]["containers"]
            ready, alive = ray["readinessProbe"]["httpGet"], ray["livenessProbe"]["httpGet"]
            assert alive == {"path": "/api/healthz", "port": 52365}, where
            if obj["kind"] == "RayService" and not where.endswith("/head"):
                port = {p["name"]: p["containerPort"] for p in ray["ports"]}[ready["port"]]
                assert (ready["path"], port) == ("/healthz", 8000), where
                serving += 1
            else:
                assert ready == {"path": "/api/healthz", "port": 52365}, where
    assert serving == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_limits_and_pinned_images(rendered: Rendered, overlay: str):
    import ray

    pods = [t for o in ray_objects(rendered[overlay]) for t in pod_templates(o)]
    pods += [
        (o["metadata"]["name"], o["spec"]["template"])
        for o in rendered[overlay]
        if o["kind"] == "Deployment"
    ]
    for where, template in pods:
        for c in template["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            name, _, tag = c["image"].rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, c["image"]
    for obj in ray_objects(rendered[overlay]):
        cluster = obj["spec"].get("rayClusterConfig", obj["spec"])
        if "headGroupSpec" in cluster:
            assert cluster["rayVersion"] == ray.__version__
            for _, t in pod_templates(obj):
                assert f"-ray{ray.__version__}-py311-" in t["spec"]["containers"][0]["image"]


@pytest.mark.parametrize(("overlay", "gpus"), [("cpu-trial", 0), ("gpu", 1)])
def test_the_training_workers_autoscale(rendered: Rendered, overlay: str, gpus: int):
    cluster = one(rendered[overlay], "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["requests"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert 0 == group["minReplicas"] < group["maxReplicas"]
    worker = group["template"]["spec"]["containers"][0]["resources"]
    assert (
        worker["requests"].get("nvidia.com/gpu", 0)
        == worker["limits"].get("nvidia.com/gpu", 0)
        == gpus
    )
    use_gpu = one(rendered[overlay], "ConfigMap")["data"]["COLECIONADOR_USE_GPU"]
    assert use_gpu == ("true" if gpus else "false")


@pytest.mark.parametrize(("overlay", "tolerant"), [("cpu-trial", False), ("gpu", True)])
def test_gcs_fault_tolerance(rendered: Rendered, overlay: str, tolerant: bool):
    """In `gpu` both clusters keep their GCS in Redis (KubeRay's gcsFaultToleranceOptions),
    its password read from the Secret the overlay makes (by its generated name) and the
    storage namespace left to KubeRay (the cluster's UID); the trial has no Redis."""
    objs = rendered[overlay]
    secret = one(objs, "Secret")
    clusters = [
        one(objs, "RayCluster")["spec"],
        one(objs, "RayService")["spec"]["rayClusterConfig"],
    ]
    for cluster in clusters:
        ft = cluster.get("gcsFaultToleranceOptions")
        if not tolerant:
            assert ft is None
            continue
        assert ft["redisAddress"].rpartition(":")[2] == "6379"
        assert "externalStorageNamespace" not in ft
        ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in config_and_secret(objs)[1]
        # KubeRay hands the password to the head itself, not as a start parameter
        assert "redis-password" not in cluster["headGroupSpec"]["rayStartParams"]
