"""The database is the source of truth; a cluster is replaceable (issue #30, item 2):
cluster A runs a queued job mid-training and is lost whole (every process SIGKILLed); a
message is published while no cluster runs; cluster B is started against the same
database, store and broker, and `colecionador up` is run. The job is resubmitted and
resumes from its checkpoint in the store, the attempt lost with A is recorded LOST and
not counted (the job may have a single attempt and still succeeds), the message of the gap
is consumed, and each job's ModelEvaluation event is published exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from services.db import repo
from services.db.session import session_factory
from services.events.broker import publish_request
from services.jobs.reconciler import LOST
from tests.amqp import delete_queues, message_count, next_message
from tests.conftest import AMQP_URL, OPERATOR_FLOOR, TINY, wait_until, write_dataset
from tests.raycluster import LocalRayCluster, free_port
from training.callbacks import Callback

pytestmark = pytest.mark.integration


class NoteFirstEpoch(Callback):
    """Appends, once per worker process of rank 0, the first epoch it trains."""

    def __init__(self, marker: str):
        self.marker, self.noted = Path(marker), False

    def on_epoch_begin(self, epoch):
        if not self.noted and self.run.rank == 0:
            with self.marker.open("a") as f:
                f.write(f"{epoch}\n")
        self.noted = True


def _cluster(secrets: Path) -> LocalRayCluster:
    return LocalRayCluster(num_cpus=2, env={"COLECIONADOR_SECRETS_DIR": str(secrets)})


def _env(cluster: LocalRayCluster, base: dict[str, str]) -> dict[str, str]:
    return {
        **base,
        "COLECIONADOR_RAY_ADDRESS": cluster.address,
        "COLECIONADOR_RAY_DASHBOARD_URL": cluster.dashboard_url,
        "COLECIONADOR_RAY_AUTH_TOKEN_PATH": str(cluster.token_path),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cluster.token_path),
    }


def _up(env: dict[str, str]) -> str:
    cli = str(Path(sys.executable).with_name("colecionador"))
    argv = [cli, "up", "--port", str(free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _why(pg_url: str, requests: str, cluster: LocalRayCluster | None) -> str:
    """What there is to say when a wait runs out: the rows, the dead letters, Ray's jobs."""
    lines = []
    with session_factory(pg_url)() as s:
        for j in repo.active_jobs(s):
            lines.append(f"job {j.id} {j.batch_id} {j.status} {j.ray_job_id} {j.error}")
            for t in repo.job_attempts(s, j.id):
                lines.append(f"  attempt {t.attempt} {t.ray_job_id} {t.ray_status} {t.message}")
    try:
        lines.append(f"dead letters: {message_count(requests + '.dead')}")
        lines.append(str(next_message(requests + ".dead", timeout=1)))
    except Exception as e:  # noqa: BLE001 - a diagnostic
        lines.append(f"no dead letter: {e!r}")
    if cluster is not None:
        for log in sorted(cluster.temp.glob("session_latest/logs/job-driver-*.log")):
            lines.append(f"{log.name}:\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(lines)


def _job(pg_url: str, batch: str):
    with session_factory(pg_url)() as s:
        return repo.get_job_by_batch(s, batch)


def test_a_replaced_cluster_resumes_the_job_in_flight_and_consumes_the_gap(
    s3_server, own_database, queues, tmp_path
):
    pg_url = own_database  # `up` deploys every production model it finds: none of others'
    requests, events = queues
    bucket = s3_server.bucket_name("replace")
    s3_server.client().create_bucket(Bucket=bucket)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "colecionador_s3_secret_key").write_text(s3_server.secret_key)
    (secrets / "colecionador_broker_url").write_text(AMQP_URL)
    data = write_dataset(tmp_path / "data", per_class=12)
    marker = tmp_path / "first-epochs"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    base.update(
        OPERATOR_FLOOR,  # the gates of 0 the TINY recipe asks for
        COLECIONADOR_HOME=str(tmp_path / "home"),
        COLECIONADOR_DATABASE_URL=pg_url,
        COLECIONADOR_STORE_URL=f"s3://{bucket}/store",
        COLECIONADOR_S3_ENDPOINT=s3_server.endpoint,
        COLECIONADOR_S3_ACCESS_KEY=s3_server.access_key,
        COLECIONADOR_S3_SECRET_KEY=s3_server.secret_key,
        COLECIONADOR_S3_REGION=s3_server.region,
        COLECIONADOR_BROKER_URL=AMQP_URL,
        COLECIONADOR_REQUESTS_QUEUE=requests,
        COLECIONADOR_EVENTS_QUEUE=events,
        COLECIONADOR_PROMOTIONS_QUEUE=events + ".promoted",
        COLECIONADOR_DATASET_ROOTS=str(tmp_path),
        COLECIONADOR_PLUGIN_MODULES="tests.*",
        COLECIONADOR_MAX_JOB_ATTEMPTS="1",  # a counted loss would fail the job
        COLECIONADOR_RECONCILE_INTERVAL_S="1",
    )
    note = {"name": "tests.integration.test_replace:NoteFirstEpoch", "marker": str(marker)}
    hp = {**TINY, "phase1_epochs": 2, "phase2_epochs": 2, "early_stopping_patience": 9}

    def message(batch: str, callbacks: list) -> dict:
        return {
            "batchId": batch,
            "datasetUri": str(data),
            "modelName": "replaced",
            "hyperparameters": {**hp, "callbacks": callbacks},
        }

    first, gap = (f"replace-{uuid.uuid4().hex[:8]}" for _ in range(2))
    t0, took = time.monotonic(), {}
    a = _cluster(secrets)
    try:
        _up(_env(a, base))
        publish_request(AMQP_URL, requests, message(first, [note]))

        def trained_an_epoch():  # its checkpoint is in the store before its row is written
            job = _job(pg_url, first)
            if job is None:
                return None
            assert job.status in ("queued", "training"), (job.status, job.error)
            with session_factory(pg_url)() as s:
                return len(repo.epoch_rows(s, job.id)) >= 1

        try:
            wait_until(trained_an_epoch, 300, "an epoch on cluster A", every=0.5)
        except TimeoutError as e:
            raise AssertionError(_why(pg_url, requests, a)) from e
    finally:
        a.kill()  # cluster A lost whole, mid-training
        took["cluster A, up, an epoch"] = time.monotonic() - t0
    publish_request(AMQP_URL, requests, message(gap, []))  # while no cluster runs

    b = _cluster(secrets)
    try:
        _up(_env(b, base))

        def both_ended():
            jobs = [_job(pg_url, batch) for batch in (first, gap)]
            return all(j is not None and j.status in ("success", "failed") for j in jobs) and jobs

        try:
            job, later = wait_until(both_ended, 600, "both jobs' end on cluster B", every=1.0)
        except TimeoutError as e:
            raise AssertionError(_why(pg_url, requests, b)) from e
        assert (job.status, later.status) == ("success", "success"), (job.error, later.error)
        with session_factory(pg_url)() as s:
            attempts = [
                (t.attempt, t.ray_status, t.ray_job_id) for t in repo.job_attempts(s, job.id)
            ]
            epochs = [r["epoch"] for r in repo.epoch_rows(s, job.id)]
        took["cluster B, up, both jobs"] = time.monotonic() - t0 - sum(took.values())
        # the attempt lost with A is LOST and not counted: one attempt allowed, and a second
        # ran (the driver of a job that ends records the job's end, not its attempt's)
        assert [a_[:2] for a_ in attempts] == [(1, LOST), (2, None)], attempts
        assert attempts[1][2].endswith("-attempt-2") and job.attempts == 2, attempts
        assert epochs == [1, 2, 3, 4]  # each once
        began = [int(x) for x in marker.read_text().split()]
        assert began[0] == 1 and len(began) == 2 and began[1] >= 2, began  # from a checkpoint
        bodies = [next_message(events, timeout=30)[0] for _ in range(2)]
        assert sorted(b_["batch_id"] for b_ in bodies) == sorted([first, gap]), bodies
        assert message_count(events) == 0  # exactly once each
        print({k: round(v, 1) for k, v in took.items()})
    finally:
        b.stop()  # with the service it runs: nothing of it outlives the cluster
        delete_queues(events + ".promoted")
