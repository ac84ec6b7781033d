"""The whole path: message -> ingress actor -> Ray job -> trained, gated, versioned model ->
rows in PostgreSQL -> event on ModelEvaluation. The same message twice is one job; a
malformed message goes to the dead-letter queue with its reason and writes nothing."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import ray
from pydantic import SecretStr
from ray.job_submission import JobStatus, JobSubmissionClient

from services import ingress
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory
from services.events.broker import publish_request
from services.jobs.ray_jobs import RayJobs, auth_headers, submission_id
from services.replica_settings import SecretNotOnNode
from tests.amqp import message_count, next_message
from tests.conftest import TINY, cli_env, give_node

pytestmark = pytest.mark.integration


def upload_tree(s3_server, root, bucket: str, prefix: str) -> str:
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*.png")):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
    return f"s3://{bucket}/{prefix}/"


def test_message_to_versioned_model_once_and_malformed_to_dead_letters(
    own_database, ray_cluster, settings_for, make_dataset, queues, s3_server
):
    pg_url = own_database
    requests, events = queues
    store_bucket = s3_server.bucket_name("models")
    datasets_bucket = s3_server.bucket_name("datasets")
    settings = settings_for(
        pg_url,
        publish_events=True,
        requests_queue=requests,
        events_queue=events,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
        store_url=f"s3://{store_bucket}/colecionador",
        dataset_roots=f"s3://{datasets_bucket}/datasets",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        api_token="api-" + uuid.uuid4().hex,
        broker_url="amqp://guest:guest@127.0.0.1:5672/",
    )
    batch = f"lote-{uuid.uuid4().hex[:8]}"
    root = make_dataset(per_class=12)
    dataset_uri = upload_tree(s3_server, root, datasets_bucket, f"datasets/{batch}")
    body = {
        "batchId": batch,
        "dataset_uri": dataset_uri,
        "totalImages": 36,
        "model_name": "ingressed",
        "hyperparameters": TINY,
    }

    # more poison than the prefetch window (4), each of a kind that once escaped the parser
    # or the checks: were any left unacked, the valid request behind them would never train
    poison = {
        "bad": ({"hyperparameters": {"learning_rate": 0.1}}, "hyperparameters.learning_rate: "),
        "tilde": ({"dataset_uri": "~nobody-here/x"}, "dataset_uri: "),  # RuntimeError
        "space": (  # TypeError (an unhashable range type) inside the tuning validator
            {"mode": "tune", "tuning": {"space": {"schedule": {"type": {}}}}},
            "tuning.space: ",
        ),
        "bare": ({"hyperparameters": {"callbacks": ["antigravity"]}}, "hyperparameters.callbacks"),
        "gate": ({"tuning": {"grid": {"seed": [1, 2]}}, "mode": "tune"}, "tuning.grid: "),
    }
    give_node(ray_cluster, settings)  # the operator's secrets, on the node
    actor = ingress.start_ingress(settings)
    try:
        for name, (fields, _) in poison.items():
            publish(settings, {"batch_id": name, "dataset_uri": dataset_uri, **fields})
        publish(settings, body)
        publish(settings, body)  # a duplicate: the same batch

        reasons = {}
        for _ in poison:
            dead, headers = next_message(requests + ".dead", timeout=60)
            reasons[dead["batch_id"]] = headers["x-reason"]
        assert reasons["bad"] == "hyperparameters.learning_rate: unknown hyperparameter"
        for name, (_, start) in poison.items():
            assert reasons[name].startswith(start), (name, reasons[name])

        event, _ = next_message(events, timeout=600)  # the job ran on the cluster
        status = ray.get(actor.status.remote())
    finally:
        ingress.stop_ingress()

    assert (event["batch_id"], event["status"], event["version"]) == (batch, "approved", 1)
    assert status["received"] == 2 + len(poison) and status["created"] == 1
    assert status["duplicates"] == 1 and status["dead_lettered"] == len(poison)
    assert status["submitted"] >= 1 and status["submit_errors"] == 0

    with session_factory(pg_url)() as s:
        jobs = s.query(TrainingJob).filter(TrainingJob.batch_id.in_([batch, *poison])).all()
        assert [j.batch_id for j in jobs] == [batch]  # one job; nothing for the bad one
        job = jobs[0]
        assert job.status == "success" and job.total_images == 36
        assert job.ray_job_id == submission_id(job.id, batch)
        assert event["job_id"] == job.id
        assert [v.version for v in repo.job_versions(s, job.id)] == [1]
        assert len(repo.epoch_rows(s, job.id)) == 2
    # the model, its pictures and the Ray Train checkpoints are in the S3 bucket
    keys = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=store_bucket, Prefix="colecionador/")[
            "Contents"
        ]
    ]
    for name in ("model.pt", "metrics.json", "curves.png", "confusion_matrix.png"):
        assert f"colecionador/models/ingressed/v1/{name}" in keys
    assert event["artifact_uri"] == f"s3://{store_bucket}/colecionador/models/ingressed/v1/model.pt"
    assert any(k.startswith(f"colecionador/checkpoints/{job.id}/final/") for k in keys)
    assert f"colecionador/events/job-{job.id}.json" in keys
    client = JobSubmissionClient(ray_cluster.dashboard_url, headers=auth_headers(settings))
    # the driver publishes the event before it exits: await the Ray job's end, then ask
    assert _wait_job(client, job.ray_job_id, timeout=120) == JobStatus.SUCCEEDED
    # no secret travelled with the Ray job: the driver read the S3 key from its node
    info = str(client.get_job_info(job.ray_job_id))
    for secret in (s3_server.secret_key, settings.api_token.get_secret_value(), "guest:guest"):
        assert secret not in info
    assert message_count(events) == 0  # exactly one event


def _name_free(wait_s: float = 10.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            ingress.get_ingress()
        except ValueError:
            return True
        time.sleep(0.2)
    return False


def test_an_ingress_on_a_node_with_other_secrets_fails_to_start_naming_them(
    own_database, ray_cluster, settings_for, queues
):
    requests, events = queues
    settings = settings_for(
        own_database,
        requests_queue=requests,
        events_queue=events,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
    )
    give_node(ray_cluster, settings)
    other = settings.model_copy(update={"api_token": SecretStr("api-not-on-the-node")})
    started = time.monotonic()
    with pytest.raises(SecretNotOnNode, match=r"^node \S+ has (no|another) api_token\b.*: set "):
        ingress.start_ingress(other)
    took = time.monotonic() - started
    assert _name_free()  # the actor is dead, not restarted, and its name free

    # `colecionador ingress` says the same line and exits 2
    env = cli_env(other, ray_cluster, "api-not-on-the-node", "read-not-on-the-node")
    cli = Path(sys.executable).with_name("colecionador")
    done = subprocess.run(
        [str(cli), "ingress"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    (said,) = [line for line in done.stderr.splitlines() if line.startswith("colecionador")]
    assert said.startswith("colecionador ingress: node ") and ": set COLECIONADOR_API_" in said
    assert "api-not-on-the-node" not in done.stdout + done.stderr
    assert _name_free()
    print(f"refused in {took:.1f} s")


def test_queued_jobs_without_a_ray_job_are_submitted_by_the_reconciler(
    ray_cluster, settings_for, make_dataset, queues
):
    """The ingress died between commit and submit: the reconciler submits what is
    pending (its own database: the reconciler takes every queued job it finds)."""
    from services.intake.records import create_job
    from services.intake.request import TrainingRequest
    from services.jobs.reconciler import Reconciler
    from tests.conftest import fresh_database
    from training.hyperparams import Hyperparameters

    requests, events = queues
    with fresh_database(f"colecionador_orphans_{uuid.uuid4().hex[:8]}") as url:
        settings = settings_for(
            url,
            requests_queue=requests,
            events_queue=events,
            ray_dashboard_url=ray_cluster.dashboard_url,
            ray_auth_token_path=ray_cluster.token_path,
        )
        # a job that fails fast at the data step: we test submission, not training
        job, _ = create_job(
            settings,
            TrainingRequest(
                batch_id=f"orphan-{uuid.uuid4().hex[:6]}",
                dataset_uri=str(make_dataset(per_class=2)),
                hyperparameters=Hyperparameters(**TINY),
            ),
        )
        assert job.ray_job_id is None
        ray_jobs = RayJobs(settings)
        reconciler = Reconciler(settings, ray_jobs)
        assert reconciler.pass_once()["submitted"] == 1
        with session_factory(url)() as s:
            row = repo.get_job(s, job.id)
        sid = row.ray_job_id
        assert sid == submission_id(job.id, job.batch_id) and row.attempts == 1
        # submitting again finds the Ray job it already submitted instead of failing
        assert reconciler.submit(job.id) == sid

        class LostTheRace(RayJobs):
            def exists(self, sid: str) -> bool:  # it looked before the other one submitted
                return False

        assert LostTheRace(settings).submit(job.id, job.batch_id) == sid  # not "already exists"
        assert _wait_job(ray_jobs.client, sid) == JobStatus.FAILED  # exits 1 on failure
        with session_factory(url)() as s:
            row = repo.get_job(s, job.id)
            assert row.status == "failed" and row.error.startswith("dataset: classes with fewer")
            assert row.attempts == 1 and len(repo.job_attempts(s, job.id)) == 1
        assert reconciler.pass_once()["resubmitted"] == 0  # it ended: nothing to do


def publish(settings, body) -> None:
    publish_request(settings.amqp_url, settings.requests_queue, body)


def _wait_job(client: JobSubmissionClient, sid: str, timeout: float = 300) -> JobStatus:
    import asyncio

    async def tail() -> None:
        async for _ in client.tail_job_logs(sid):
            pass

    asyncio.run(asyncio.wait_for(tail(), timeout))  # ends when the job ends
    return client.get_job_status(sid)


def test_a_job_over_its_wall_clock_limit_is_failed_and_its_ray_job_stopped(
    ray_cluster, settings_for, queues, tmp_path
):
    """A job whose driver has run for an hour (a Ray job that sleeps, started_at an hour
    back) against a limit of 60 s: one reconciler pass ends it ``failed`` with the reason
    and its event, and stops its Ray job."""
    from datetime import timedelta

    from sqlalchemy import update

    from services.db.models import utcnow
    from services.intake.records import create_job
    from services.intake.request import TrainingRequest
    from services.jobs.reconciler import Reconciler

    requests, events = queues
    settings = settings_for(
        f"sqlite:///{tmp_path / 'limit.db'}",
        requests_queue=requests,
        events_queue=events,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
        max_job_seconds=60,
    )
    job, _ = create_job(settings, TrainingRequest(batch_id="slow", dataset_uri=str(tmp_path)))
    ray_jobs = RayJobs(settings)
    sid = f"colecionador-limit-{uuid.uuid4().hex[:8]}"
    ray_jobs.client.submit_job(entrypoint="sleep 600", submission_id=sid)
    with session_factory(settings.db_url)() as s:
        repo.record_attempt(s, job.id, sid)
        repo.start_job(s, job.id, sid)
        s.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job.id)
            .values(started_at=utcnow() - timedelta(hours=1))
        )
        s.commit()
    counts = Reconciler(settings, ray_jobs).pass_once()
    assert counts["failed"] == 1 and counts["over_limit"] == 1
    with session_factory(settings.db_url)() as s:
        row = repo.get_job(s, job.id)
        assert row.status == "failed" and row.error.startswith("limit: the job ran 36")
        assert "wall-clock limit of 60 s" in row.error
        (event,) = repo.job_events(s, job.id)
        assert event.body["status"] == "failed" and event.body["error"] == row.error
    assert _wait_job(ray_jobs.client, sid, timeout=60) == JobStatus.STOPPED
