"""Two Ray nodes that share no filesystem (tests/multinode.py): a 0-CPU head that runs the
drivers and a worker node with 2 CPUs and a custom resource standing in for a GPU node.
Where each part ran is read from Ray's state API (node ids), not only that it ended."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from services.db import repo
from services.db.session import session_factory
from tests.conftest import TINY, write_dataset
from tests.multinode import (
    GPU_NODE,
    WorkerNode,
    actor_logs,
    job_logs,
    node_settings,
    private_mounts_refused,
    state,
    submit,
)
from tests.raycluster import LocalRayCluster, free_port

pytestmark = pytest.mark.integration

SECRET_FILE = "colecionador_s3_secret_key"


class TwoNodes:
    def __init__(self, head: LocalRayCluster, worker: WorkerNode, head_id: str, secrets: Path):
        self.head, self.worker, self.head_id = head, worker, head_id
        self.secrets_dirs = (secrets, worker.temp / "secrets")  # each node's own folder

    def give(self, **secrets: str) -> None:
        """Give both nodes these secrets (name -> value), as an operator does."""
        for folder in self.secrets_dirs:
            for name, value in secrets.items():
                (folder / f"colecionador_{name}").write_text(value)


@pytest.fixture(scope="module")
def two_nodes(s3_server, tmp_path_factory):
    why = private_mounts_refused()
    if why is not None:
        pytest.skip(f"no worker node without the head's filesystem here: {why}")
    secrets = tmp_path_factory.mktemp("head-secrets")
    (secrets / SECRET_FILE).write_text(s3_server.secret_key)
    head = LocalRayCluster(num_cpus=0, env={"COLECIONADOR_SECRETS_DIR": str(secrets)})
    try:
        # the worker node sees neither the head's home nor this session's tmp folders
        worker = WorkerNode(
            head,
            num_cpus=2,
            resources={GPU_NODE: 2},
            hide=[tmp_path_factory.getbasetemp()],
            secrets={SECRET_FILE: s3_server.secret_key},
        )
    except BaseException:
        head.stop()
        raise
    head_id = next(n["node_id"] for n in state(head, "nodes") if n["is_head_node"])
    yield TwoNodes(head, worker, head_id, secrets)
    worker.stop(timeout=5)  # what a node leaves running is killed with its group
    head.stop(timeout=10)


def what_happened(nodes: TwoNodes, db_url: str, batch: str, requests: str) -> str:
    """For a queued job that did not succeed: its row, its Ray jobs (with their drivers'
    output), the dead letters and the ingress's log."""
    from tests.amqp import message_count

    with session_factory(db_url)() as s:
        job = repo.get_job_by_batch(s, batch)
        said = [f"row: {(job.id, job.status, job.error) if job else None}"]
    if job is None:
        said.append(f"dead letters: {message_count(requests + '.dead')}")
    for j in state(nodes.head, "jobs"):
        if (j.get("metadata") or {}).get("colecionador_job_id") == str(job and job.id):
            sid = j["submission_id"]
            said.append(f"ray job {sid}: {j['status']} {j.get('message')}")
            said.append(job_logs(nodes.head, sid)[-4000:])
    said.append(actor_logs(nodes.head, "Ingress"))
    return "\n".join(said)


def driver_job_id(cluster: LocalRayCluster, sid: str) -> str:
    """The Ray job id (what an actor's ``job_id`` says) of submission ``sid``."""
    return next(j for j in state(cluster, "jobs") if j.get("submission_id") == sid)["job_id"]


def driver_node(cluster: LocalRayCluster, sid: str) -> str:
    return next(j for j in state(cluster, "jobs") if j.get("submission_id") == sid)[
        "driver_node_id"
    ]


def test_a_head_only_folder_streams_from_the_head_and_trains_on_the_gpu_node(
    two_nodes, s3_server, pg_url, tmp_path
):
    """A local data set that only the head holds, streamed (decode into shards in the
    store): decoded on the head, where its folder is (on the worker node every file
    would be missing); the Train workers on the node type the operator asked for."""
    bucket = s3_server.bucket_name("mn")
    s3_server.client().create_bucket(Bucket=bucket)
    data = write_dataset(tmp_path / "head-only", per_class=12)
    batch = f"mn-{uuid.uuid4().hex[:8]}"
    job_env = node_settings(
        s3_server,
        bucket,
        pg_url,
        COLECIONADOR_STREAM_MIN_IMAGES="0",
        COLECIONADOR_WORKER_RESOURCES=json.dumps({GPU_NODE: 1}),
        COLECIONADOR_DATASET_ROOTS=str(tmp_path),
    )
    sid, out = submit(
        two_nodes.head, job_env, "--dataset", str(data), "--batch-id", batch, recipe=TINY
    )
    assert f"Job '{sid}' succeeded" in out, out[-4000:]
    assert "decoded 36 files" in out  # every file read where it is
    with session_factory(pg_url)() as s:
        job = repo.get_job_by_batch(s, batch)
        assert job.status == "success" and job.use_gpu is False  # no GPU on this cluster
        assert [v.version for v in repo.job_versions(s, job.id)] == [1]
    assert driver_node(two_nodes.head, sid) == two_nodes.head_id
    decoders = [t for t in state(two_nodes.head, "tasks") if "_decode_rows" in t.get("name", "")]
    assert decoders and {t["node_id"] for t in decoders} == {two_nodes.head_id}
    workers = state(two_nodes.head, "actors", class_name="RayTrainWorker")
    assert len(workers) >= 2
    assert {a["node_id"] for a in workers} == {two_nodes.worker.node_id}
    # the workers' bundles ask for the resource (Ray names a bundle's by its group)
    for a in workers:
        asked = {v for k, v in a["required_resources"].items() if k.startswith(GPU_NODE)}
        assert asked == {1.0}, a["required_resources"]


def test_an_s3_data_set_streams_and_trains_on_the_worker_node(
    two_nodes, s3_server, pg_url, tmp_path
):
    """A data set in S3, streamed (decoded into shards in the store): the decode tasks
    read the objects from the bucket wherever they run, and the job trains on the worker
    node with its checkpoints and model in S3."""
    from tests.integration.test_storage_s3 import upload_tree

    bucket = s3_server.bucket_name("mns3")
    s3_server.client().create_bucket(Bucket=bucket)
    upload_tree(s3_server, write_dataset(tmp_path / "local", per_class=12), bucket, "data/b1")
    batch = f"mns3-{uuid.uuid4().hex[:8]}"
    job_env = node_settings(
        s3_server,
        bucket,
        pg_url,
        COLECIONADOR_STREAM_MIN_IMAGES="0",
        COLECIONADOR_DATASET_ROOTS=f"s3://{bucket}/data",
    )
    sid, out = submit(
        two_nodes.head, job_env, "--dataset", f"s3://{bucket}/data/b1", "--batch-id", batch,
        recipe=TINY,
    )  # fmt: skip
    assert f"Job '{sid}' succeeded" in out, out[-4000:]
    assert "decoded 36 files" in out  # every object read from the bucket
    with session_factory(pg_url)() as s:
        job = repo.get_job_by_batch(s, batch)
        assert job.status == "success"
        (version,) = repo.job_versions(s, job.id)
    assert version.model_path.startswith(f"s3://{bucket}/store/")
    assert driver_node(two_nodes.head, sid) == two_nodes.head_id
    workers = state(two_nodes.head, "actors", class_name="RayTrainWorker")
    mine = [a for a in workers if a.get("job_id") == driver_job_id(two_nodes.head, sid)]
    assert mine and {a["node_id"] for a in mine} == {two_nodes.worker.node_id}
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert any(k.startswith(f"store/checkpoints/{job.id}/") for k in keys)


def test_a_job_on_one_nodes_embedded_defaults_is_refused_saying_what_to_set(two_nodes, tmp_path):
    """No store, database or broker named: on two nodes the driver refuses before any
    training (the workers would checkpoint into the worker node's own folder, the job's
    rows would live in the head's SQLite); ``colecionador ingress`` refuses to start."""
    data = write_dataset(tmp_path / "d", per_class=6)
    job_env = {"COLECIONADOR_DATASET_ROOTS": str(tmp_path), "COLECIONADOR_HOME": str(tmp_path)}
    sid, out = submit(
        two_nodes.head, job_env, "--dataset", str(data), "--batch-id", "embedded", recipe=TINY
    )
    assert f"Job '{sid}' failed" in out, out[-3000:]
    assert "the cluster has 2 nodes" in out
    assert "COLECIONADOR_STORE_URL" in out and "COLECIONADOR_DATABASE_URL" in out
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    env.update(
        COLECIONADOR_HOME=str(tmp_path / "home"),
        COLECIONADOR_RAY_ADDRESS=two_nodes.head.address,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(two_nodes.head.token_path),
    )
    cli = str(Path(sys.executable).with_name("colecionador"))
    done = subprocess.run([cli, "ingress"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "the cluster has 2 nodes" in lines[-1] and "COLECIONADOR_DATABASE_URL" in lines[-1]
    assert "COLECIONADOR_BROKER_URL" in lines[-1]


def test_a_tune_job_with_label_check_leaves_no_credential_in_the_store(
    two_nodes, s3_server, pg_url, tmp_path
):
    """A tune job (k folds per config, label check on the out-of-fold probabilities)
    whose trials run on the worker node and write to S3: Tune pickles the storage
    filesystem into tuner.pkl and its experiment state in the bucket; no object the job
    wrote holds the secret key."""
    from services.config import Settings
    from services.intake.records import create_job
    from services.intake.request import parse_request

    bucket = s3_server.bucket_name("mntune")
    s3_server.client().create_bucket(Bucket=bucket)
    job_env = node_settings(s3_server, bucket, pg_url, COLECIONADOR_DATASET_ROOTS=str(tmp_path))
    settings = Settings(
        home=tmp_path / "home",
        database_url=pg_url,
        store_url=f"s3://{bucket}/store",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        publish_events=False,
    )
    message = {
        "batchId": f"mntune-{uuid.uuid4().hex[:8]}",
        "datasetUri": str(write_dataset(tmp_path / "head-only", per_class=10)),
        "modelName": "mntune",
        "mode": "tune",
        "hyperparameters": {**TINY, "label_check": True},
        "tuning": {"grid": {"phase1_lr": [1e-2]}, "kFolds": 2, "scheduler": "fifo"},
    }
    job, _ = create_job(settings, parse_request(message), num_workers=1)
    sid, out = submit(two_nodes.head, job_env, "--job-id", str(job.id))
    assert f"Job '{sid}' succeeded" in out, out[-4000:]
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith("tuner.pkl") for k in keys), keys  # Tune's pickled state is there
    assert any(k.endswith("label_issues.json") for k in keys)
    secret = s3_server.secret_key.encode()
    holding = [k for k in keys if secret in client.get_object(Bucket=bucket, Key=k)["Body"].read()]
    assert holding == []


def test_serve_puts_the_api_on_the_head_and_a_models_replicas_on_both_nodes(
    two_nodes, s3_server, pg_url, tmp_path
):
    """`colecionador serve` on two nodes with 2 predict replicas, at most one a node: the
    API replica on the head (beside the settings), one ModelServer replica on each node,
    every answer from the promoted version. The replicas were sent no secret: each read
    the API token and the S3 key from its own node's folder."""
    from pydantic import SecretStr

    from benchmarks.predict_latency import digit_png, store_promoted
    from services.config import Settings

    bucket = s3_server.bucket_name("mnserve")
    s3_server.client().create_bucket(Bucket=bucket)
    model, token = f"mnserve-{uuid.uuid4().hex[:6]}", "w-" + uuid.uuid4().hex
    env_settings = node_settings(s3_server, bucket, pg_url)
    settings = Settings(
        home=tmp_path / "home",
        **{k.removeprefix("COLECIONADOR_").lower(): v for k, v in env_settings.items()},
        s3_secret_key=SecretStr(s3_server.secret_key),
    )
    store_promoted(settings, model, "mobilenet_v3_small", 32)
    two_nodes.give(api_token=token)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    env.update(
        env_settings,
        COLECIONADOR_HOME=str(tmp_path / "cli-home"),
        COLECIONADOR_S3_SECRET_KEY=s3_server.secret_key,
        COLECIONADOR_API_TOKEN=token,
        COLECIONADOR_PREDICT_MAX_REPLICAS_PER_NODE="1",
        COLECIONADOR_RAY_ADDRESS=two_nodes.head.address,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(two_nodes.head.token_path),
    )
    cli = str(Path(sys.executable).with_name("colecionador"))
    argv = [cli, "serve", "--port", str(port), "--predict", model, "--predict-replicas", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        replicas = [
            a
            for a in state(two_nodes.head, "actors", state="ALIVE")
            if a.get("class_name", "").startswith("ServeReplica:")
        ]
        where = {}
        for a in replicas:
            where.setdefault(a["class_name"].rsplit(":", 1)[-1], []).append(a["node_id"])
        assert sorted(where["ModelServer"]) == sorted([two_nodes.head_id, two_nodes.worker.node_id])
        assert where["colecionador-api"] == [two_nodes.head_id]
        body = {"image": base64.b64encode(digit_png()).decode()}
        url = f"http://127.0.0.1:{port}/models/{model}/predict"
        for _ in range(6):  # Serve's router spreads them over both replicas
            r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            assert r.status_code == 200, r.text
            assert (r.json()["version"], r.json()["alias"]) == (1, "production")
    finally:
        subprocess.run([cli, "down"], env=env, capture_output=True, timeout=120)


def test_a_queued_job_whose_train_worker_dies_on_the_worker_node_resumes(
    two_nodes, s3_server, own_database, queues, tmp_path
):
    """`colecionador up` on two nodes, a message on the queue: the ingress (on the head)
    records and submits the job, its driver runs on the head and its Train workers on the
    worker node; rank 1 dies there mid-epoch (tests/integration/test_resume.py's DieOnce)
    and Ray Train restarts the group from the checkpoint in S3: each epoch recorded once."""
    from services.events.broker import publish_request
    from tests.amqp import message_count
    from tests.conftest import AMQP_URL, OPERATOR_FLOOR, wait_until

    requests, events = queues
    bucket = s3_server.bucket_name("mnqueue")
    s3_server.client().create_bucket(Bucket=bucket)
    data = write_dataset(tmp_path / "head-only", per_class=24)
    marker = Path(f"/tmp/mn-died-{uuid.uuid4().hex[:8]}")  # /tmp: seen by both nodes
    batch = f"mnq-{uuid.uuid4().hex[:8]}"
    two_nodes.give(broker_url=AMQP_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    env.update(
        node_settings(s3_server, bucket, own_database),
        **OPERATOR_FLOOR,  # TINY's gates of 0 (the COLECIONADOR_* of this process are dropped)
        COLECIONADOR_HOME=str(tmp_path / "cli-home"),
        COLECIONADOR_S3_SECRET_KEY=s3_server.secret_key,
        COLECIONADOR_BROKER_URL=AMQP_URL,
        COLECIONADOR_REQUESTS_QUEUE=requests,
        COLECIONADOR_EVENTS_QUEUE=events,
        COLECIONADOR_DATASET_ROOTS=str(tmp_path),
        COLECIONADOR_PLUGIN_MODULES="tests.*",
        COLECIONADOR_MAX_FAILURES="1",
        COLECIONADOR_RAY_ADDRESS=two_nodes.head.address,
        COLECIONADOR_RAY_DASHBOARD_URL=two_nodes.head.dashboard_url,
        COLECIONADOR_RAY_AUTH_TOKEN_PATH=str(two_nodes.head.token_path),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(two_nodes.head.token_path),
    )
    cli = str(Path(sys.executable).with_name("colecionador"))
    done = subprocess.run(
        [cli, "up", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        die = {"name": "tests.integration.test_resume:DieOnce", "epoch": 3, "rank": 1}
        hp = {**TINY, "phase1_epochs": 2, "phase2_epochs": 2, "early_stopping_patience": 9}
        body = {
            "batchId": batch,
            "datasetUri": str(data),
            "modelName": "mnqueue",
            "hyperparameters": {**hp, "callbacks": [{**die, "marker": str(marker)}]},
        }
        publish_request(AMQP_URL, requests, body)

        def ended():
            with session_factory(own_database)() as s:
                job = repo.get_job_by_batch(s, batch)
            if job is None:  # not recorded yet, or rejected: a dead letter ends the wait
                return "dead-lettered" if message_count(requests + ".dead") else None
            return job if job.status in ("success", "failed") else None

        try:
            job = wait_until(ended, 420, "the queued job's end", every=1.0)
        except TimeoutError as e:
            job = str(e)
        if isinstance(job, str) or job.status != "success":
            pytest.fail(f"{job}\n{what_happened(two_nodes, own_database, batch, requests)}")
        assert marker.read_text() == "rank 1 died in epoch 3"  # it died, on the worker node
        with session_factory(own_database)() as s:
            assert [r["epoch"] for r in repo.epoch_rows(s, job.id)] == [1, 2, 3, 4]
        drivers = [
            j
            for j in state(two_nodes.head, "jobs")
            if (j.get("metadata") or {}).get("colecionador_job_id") == str(job.id)
        ]
        assert drivers and {j["driver_node_id"] for j in drivers} == {two_nodes.head_id}
        ray_jobs = {j["job_id"] for j in drivers}
        workers = [
            a
            for a in state(two_nodes.head, "actors", class_name="RayTrainWorker")
            if a.get("job_id") in ray_jobs
        ]
        assert len(workers) >= 3  # the first group of 2, then the restarted one
        assert {a["node_id"] for a in workers} == {two_nodes.worker.node_id}
    finally:
        subprocess.run([cli, "down"], env=env, capture_output=True, timeout=120)
        marker.unlink(missing_ok=True)
