"""MLflow tracking against a real ``mlflow server`` (tests/mlflowserver.py), read back
through MLflow's own client: records staged from real rows and files, drained as the
driver and the ingress drain them; the server away (a closed TCP proxy, a server that
never answers) costs a job nothing, and the outbox drains once it is back; one small real
job end to end."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import update

from services.api import create_app
from services.api.quality_sections import mlflow_line
from services.db import repo
from services.db.models import MlflowRecord, utcnow
from services.db.session import prepare_database, session_factory
from services.events import mlflow_outbox, mlflow_pump
from services.ingress import Consumer
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs import lifecycle
from services.jobs.driver import run_job
from services.jobs.progress import EpochRecorder
from services.registry import promotion
from services.store.artifacts import version_prefix
from services.store.storage import open_store
from tests.conftest import TINY, wait_until
from tests.tcpproxy import TcpProxy
from training.hyperparams import Hyperparameters

pytestmark = pytest.mark.integration


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


EPOCHS = [
    {"epoch": 1, "phase": 1, "loss": 1.2, "accuracy": 0.5, "val_loss": 1.1, "lr": 1e-3},
    {"epoch": 2, "phase": 2, "loss": 0.7, "accuracy": 0.8, "val_loss": 0.9, "lr": 1e-5},
]


def _job(settings, model: str, hp: dict) -> object:
    with session_factory(settings.db_url)() as s:
        job, _ = repo.create_job(
            s,
            batch_id=f"{model}-{uuid.uuid4().hex[:6]}",
            dataset_uri="/data/x",
            model_name=model,
            hyperparameters=hp,
        )
        s.commit()
        return job


def _version(settings, store, job, n: int, status: str) -> None:
    """Version ``n`` of the job's model committed with its files and MLflow records, as
    the driver commits one (the auto promotion of an approved one included)."""
    prefix = version_prefix(job.model_name, n)
    files = {
        "model.pt": b"weights",
        "metrics.json": json.dumps({"test": {"accuracy": 0.9}}).encode(),
        "curves.png": _png(),
        "model_card.md": b"# card\n",
        "health.json": b"{}",  # not an MLflow artifact
    }
    uris = {name: store.put_bytes(prefix + name, data) for name, data in files.items()}
    with session_factory(settings.db_url)() as s:
        repo.reserve_version(
            s,
            job.model_name,
            job_id=job.id,
            accuracy=0.9,
            precision=0.9,
            recall=0.9,
            f1=0.9,
            status=status,
            gate={"status": status, "rules": []},
            model_path=lambda v: uris["model.pt"],
        )
        keys = {name: prefix + name for name in files}
        metrics = {"accuracy": 0.9, "f1": 0.875, "n": 20, "per_class": {"a": 1}}
        mlflow_outbox.stage_success(s, job, n, status, uris["model.pt"], keys, metrics)
        if status == "approved":
            promotion.auto_promote(s, settings, job.model_name, n, job.id)
        s.commit()


def _stage_job(settings, model: str) -> tuple[object, dict]:
    """A job's records from real rows: the run, every effective hyperparameter, two epochs
    through the real EpochRecorder (as the Train controller calls it)."""
    hp = Hyperparameters(**TINY).effective()
    job = _job(settings, model, hp)
    mlflow_outbox.record(settings, mlflow_outbox.stage_run, job, 1)
    mlflow_outbox.record(settings, mlflow_outbox.stage_params, job.id, model, hp)
    recorder = EpochRecorder(settings.db_url, job.id, model)
    for row in EPOCHS:
        recorder.after_report(None, [row], None)
    return job, hp


def _run_of(client, model: str, job_id: int):
    exp = client.get_experiment_by_name(model)
    runs = client.search_runs([exp.experiment_id], f"tags.`colecionador.job_id` = '{job_id}'")
    return runs


def test_a_job_read_back_through_mlflow(db_url, settings_for, mlflow_server):
    model = f"m-{uuid.uuid4().hex[:8]}"
    settings = settings_for(db_url, mlflow_tracking_uri=mlflow_server.uri)
    prepare_database(settings)
    store = open_store(settings)
    job, hp = _stage_job(settings, model)
    _version(settings, store, job, 1, "approved")
    # a second job's version, rejected, that a person promotes over the gate
    job2, _ = _stage_job(settings, model)
    _version(settings, store, job2, 2, "rejected")
    with session_factory(settings.db_url)() as s:
        promotion.promote(s, settings, model, 2, "production", by="ana", reason="reviewed")
        s.commit()

    with session_factory(settings.db_url)() as s:  # another drainer holds the first one
        first = repo.pending_mlflow_records(s, limit=1)[0].id
        assert repo.claim_mlflow_record(s, first, utcnow() + timedelta(seconds=60))
    assert mlflow_outbox.drain(settings).sent == 0  # the model's order is the holder's
    with session_factory(settings.db_url)() as s:
        s.execute(update(MlflowRecord).values(lease_until=None))
        s.commit()
    done = mlflow_outbox.drain(settings)
    # approved: registered, and production moved to it; rejected: neither
    assert (done.sent, done.refused, done.failed) == (8 + 6 + 1, 0, None)

    client = mlflow_server.client()
    (run,) = _run_of(client, model, job.id)
    tags = run.data.tags
    assert tags["colecionador.batch_id"] == job.batch_id and tags["colecionador.attempt"] == "1"
    assert tags["mlflow.runName"] == f"job-{job.id}" and run.info.status == "FINISHED"
    assert run.data.params == mlflow_outbox.param_values(hp)  # every effective value
    assert len(run.data.params) == len(hp)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.2), (2, 0.7)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "lr")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == 0.9 and run.data.metrics["test_n"] == 20
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"metrics.json", "curves.png", "model_card.md"}
    local = client.download_artifacts(run.info.run_id, "model_card.md")
    assert open(local, "rb").read() == b"# card\n"

    versions = client.search_model_versions(f"name = '{model}'")
    ours = {v.tags["colecionador.version"]: v for v in versions}
    assert sorted(ours) == ["1", "2"]  # v2 registered when a person promoted it
    assert (
        ours["1"].run_id == run.info.run_id and ours["2"].tags["colecionador.verdict"] == "rejected"
    )
    production = client.get_model_version_by_alias(model, "production")
    assert production.tags["colecionador.version"] == "2"  # moved as ours moved

    # every record sent again (a drainer that died after MLflow answered): nothing doubles
    with session_factory(settings.db_url)() as s:
        s.execute(update(MlflowRecord).values(sent_at=None))
        s.commit()
    assert mlflow_outbox.drain(settings, limit=4).sent == done.sent  # 4 at a time
    assert len(_run_of(client, model, job.id)) == 1
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert len(client.search_model_versions(f"name = '{model}'")) == 2


def test_a_tune_jobs_configs_are_nested_runs(settings_for, tmp_path, mlflow_server):
    model = f"t-{uuid.uuid4().hex[:8]}"
    settings = settings_for(f"sqlite:///{tmp_path / 't.db'}", mlflow_tracking_uri=mlflow_server.uri)
    prepare_database(settings)
    job = _job(settings, model, {})
    mean = {"val_loss": 0.8, "val_loss_std": 0.1, "val_accuracy": 0.7, "folds": [{"a": 1}]}
    trials = [
        {
            "index": 0,
            "config": {"phase1_lr": 0.001},
            "status": "completed",
            "rank": 1,
            "history": [{"epoch": 1, **mean}, {"epoch": 2, **mean, "val_loss": 0.5}],
        },
        {"index": 1, "config": {"phase1_lr": 1.0}, "status": "stopped_early", "rank": 2,
         "history": [{"epoch": 1, **mean, "val_loss": float("nan")}]},
    ]  # fmt: skip
    with session_factory(settings.db_url)() as s:
        mlflow_outbox.stage_trials(s, job.id, model, 7, trials)
        s.commit()
    assert mlflow_outbox.drain(settings).sent == 1

    client = mlflow_server.client()
    runs = _run_of(client, model, job.id)
    parent = next(r for r in runs if r.info.run_name == f"job-{job.id}")
    nested = {r.data.tags["colecionador.trial"]: r for r in runs if r is not parent}
    assert sorted(nested) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in nested.values()} == {parent.info.run_id}
    assert nested["0"].data.params == {"phase1_lr": "0.001"}
    loss = client.get_metric_history(nested["0"].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in loss] == [(1, 0.8), (2, 0.5)]
    assert nested["1"].info.status == "KILLED" and nested["0"].info.status == "FINISHED"
    assert str(nested["1"].data.metrics["val_loss"]) == "nan"  # a diverged config, said so
    assert nested["0"].data.tags["colecionador.rank"] == "1"

    plain = settings_for(settings.db_url)  # an API replica without the setting cancels it
    lifecycle.cancel(plain, job.id, "cancelled by ana")
    assert mlflow_outbox.drain(settings).sent == 1  # the run it started ends all the same
    ended = client.get_run(parent.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["colecionador.error"] == "cancelled by ana"


def _hung_port() -> tuple[socket.socket, int]:
    """A server that takes connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def test_a_server_away_costs_nothing_and_the_outbox_drains_when_back(
    settings_for, tmp_path, mlflow_server
):
    model = f"a-{uuid.uuid4().hex[:8]}"
    proxy = TcpProxy(mlflow_server.port)  # closed: connections refused
    db = f"sqlite:///{tmp_path / 'a.db'}"
    uri = proxy.url("http://127.0.0.1:{port}")
    settings = settings_for(db, mlflow_tracking_uri=uri, mlflow_timeout_s=1)
    prepare_database(settings)
    pump = mlflow_pump.start_pump(settings, model)
    t0 = time.monotonic()
    job, _ = _stage_job(settings, model)  # while the pump tries and fails
    staged_s = time.monotonic() - t0
    _version(settings, open_store(settings), job, 1, "approved")
    wait_until(lambda: any(d.failed for d in pump.drains), 60, "a drain against the closed port")
    t0 = time.monotonic()
    pump.stop()
    assert time.monotonic() - t0 < 2.5  # one bounded flush at most (2 x the 1 s timeout)
    assert staged_s < 5
    with session_factory(db)() as s:
        backlog = repo.mlflow_backlog(s, job.id)
    assert backlog["pending"] == backlog["records"] == 8 and backlog["refused"] == 0
    with TestClient(create_app(settings)) as api:  # the job page says so
        assert "MLflow: 8 records pending" in api.get(f"/ui/jobs/{job.id}").text

    hung, port = _hung_port()  # accepts, never answers: each try is one client timeout
    try:
        slow = settings.model_copy(
            update={"mlflow_tracking_uri": SecretStr(f"http://127.0.0.1:{port}")}
        )
        t0 = time.monotonic()
        done = mlflow_outbox.drain(slow)
        assert done.sent == 0 and done.failed and time.monotonic() - t0 < 4
    finally:
        hung.close()

    with proxy:  # the server is back
        done = mlflow_outbox.drain(settings)
    assert (done.sent, done.refused, done.failed) == (8, 0, None)
    with session_factory(db)() as s:
        assert "every record written" in mlflow_line(repo.mlflow_backlog(s, job.id))
    client = mlflow_server.client()
    (run,) = _run_of(client, model, job.id)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert (
        client.get_model_version_by_alias(model, "production").tags["colecionador.version"] == "1"
    )


def test_a_tiny_job_with_mlflow_away_ends_on_time_and_is_tracked_once_back(
    settings_for, tmp_path, make_dataset, ray_cluster, mlflow_server
):
    model = f"j-{uuid.uuid4().hex[:8]}"
    proxy = TcpProxy(mlflow_server.port)  # closed for the whole job
    db = f"sqlite:///{tmp_path / 'j.db'}"
    uri = proxy.url("http://127.0.0.1:{port}")
    settings = settings_for(db, mlflow_tracking_uri=uri, mlflow_timeout_s=2)
    request = TrainingRequest(
        batch_id=f"mlflow-{uuid.uuid4().hex[:8]}",
        dataset_uri=str(make_dataset(per_class=12, size=16)),
        model_name=model,
        hyperparameters=Hyperparameters(**TINY),
    )
    job, _ = create_job(settings, request)
    outcome = run_job(job.id, settings)
    returned = datetime.now(UTC)
    assert outcome.status == "success" and outcome.verdict == "approved", outcome.error
    with session_factory(db)() as s:
        finished = repo.get_job(s, job.id).finished_at
        backlog, hp = repo.mlflow_backlog(s, job.id), repo.hyperparameters(s, job.id)
    # on time: from its final status the driver waited one bounded flush at most
    after_s = (returned - finished.replace(tzinfo=finished.tzinfo or UTC)).total_seconds()
    assert after_s < 2 * settings.mlflow_timeout_s + 2
    assert backlog["pending"] == backlog["records"] == 8 and backlog["refused"] == 0

    with proxy:  # back: the ingress's own drain writes it all
        consumer = Consumer(settings)
        asyncio.run(consumer.mlflow_once())
    assert consumer.stats["mlflow_written"] == 8 and consumer.stats["mlflow_backlog"] == 0
    client = mlflow_server.client()
    (run,) = _run_of(client, model, job.id)
    effective = Hyperparameters(**hp).effective()  # as the trainer got them
    assert run.info.status == "FINISHED"
    assert run.data.params == mlflow_outbox.param_values(effective)
    for name in ("loss", "val_loss", "val_accuracy", "lr", "epoch_time_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "curves.png", "confusion_matrix.png"} <= names
    assert "health.json" not in names and "model.pt" not in names
    production = client.get_model_version_by_alias(model, "production")
    assert production.tags["colecionador.version"] == "1"
    assert production.run_id == run.info.run_id
