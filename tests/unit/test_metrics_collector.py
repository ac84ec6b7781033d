"""GET /metrics's collector (services/db/stats.py, services/metrics/collector.py) against a
real, fresh SQLite and PostgreSQL database with rows written through the repository,
the exposition parsed back with prometheus_client's parser; and the route's read rule on
the app without Ray."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

from services.db import repo
from services.db.models import Event, TrainingJob
from services.db.session import session_factory, upgrade
from services.metrics.collector import QueueReading, render, timed_snapshot
from services.statuses import JOB_STATUSES
from tests.conftest import fresh_database
from tests.factories import add_version

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    """A database of the test's own at head: the counts are this test's rows alone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metrics.db'}"
        upgrade(url)
        yield url
        return
    with fresh_database(f"colecionador_metrics_{uuid.uuid4().hex[:8]}") as url:
        upgrade(url)
        yield url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sm in family.samples:
            out[(sm.name, tuple(sorted(sm.labels.items())))] = sm.value
    return out


def scrape(url: str, queue: QueueReading | None = None) -> dict:
    with session_factory(url)() as s:
        snap, took = timed_snapshot(s)
    text = render(snap, queue, took).decode()
    return samples(text)


def job(s, name: str, status: str = "queued", model: str = "m", **times) -> int:
    """A job recorded through the repository, then put in ``status`` at the given times."""
    j, _ = repo.create_job(s, batch_id=name, dataset_uri="x", model_name=model, hyperparameters={})
    values = {"status": status, "created_at": times.pop("created_at", T0), **times}
    s.execute(update(TrainingJob).where(TrainingJob.id == j.id).values(**values))
    s.commit()
    return j.id


def test_an_empty_database_gives_every_status_at_zero(empty_url):
    got = scrape(empty_url)
    for status in JOB_STATUSES:
        assert got[("colecionador_jobs", (("status", status),))] == 0
    assert got[("colecionador_outbox_backlog", ())] == 0
    assert got[("colecionador_outbox_oldest_age_seconds", ())] == 0
    assert got[("colecionador_job_resubmissions_total", ())] == 0
    steps = {(n, lb): v for (n, lb), v in got.items() if n.startswith("colecionador_job_step")}
    assert steps[("colecionador_job_step_duration_seconds_count", (("step", "queued"),))] == 0
    assert got[("colecionador_metrics_database_seconds", ())] > 0
    assert not any(n.startswith("colecionador_broker") for n, _ in got)  # not asked


def test_the_exposition_counts_what_the_rows_say(empty_url):
    with session_factory(empty_url)() as s:
        for i in range(2):
            job(s, f"q{i}")
        run = job(s, "run", "training", model="digits", started_at=T0 + timedelta(seconds=30))
        for epoch, rate, wait in ((1, 90.0, 0.5), (2, 150.0, 0.25)):
            row = {"phase": 1, "epoch_time_s": 12.0, "images_per_s": rate, "data_wait": wait}
            repo.record_epoch(s, run, epoch, row)
        fresh = job(s, "fresh", "training", started_at=T0 + timedelta(seconds=2))
        for i, seconds in enumerate((100, 400, 4000)):
            job(
                s,
                f"ok{i}",
                "success",
                started_at=T0 + timedelta(seconds=10),
                finished_at=T0 + timedelta(seconds=10 + seconds),
                training_time_s=seconds / 2,
            )
        repo.record_epoch(s, run - 1, 3, {"phase": 2, "epoch_time_s": 40.0})  # a queued one's
        job(s, "bad", "failed", started_at=T0, finished_at=T0 + timedelta(seconds=50))
        job(s, "gone", "cancelled", finished_at=T0 + timedelta(seconds=5))  # never started
        for attempt in range(3):
            repo.record_attempt(s, fresh, f"ray-{attempt}")
        now = datetime.now(UTC)
        for n, (age, queue, published) in enumerate(
            ((120, "q", None), (10, "q", None), (300, "q", now), (900, None, None))
        ):
            repo.add_event(s, f"e{n}", None, "ModelEvaluation", queue, {"n": n})
            s.flush()
            values = {"created_at": now - timedelta(seconds=age), "published_at": published}
            s.execute(update(Event).where(Event.id == f"e{n}").values(**values))
        for model, status in (("a", "approved"), ("a", "rejected"), ("a", "approved")):
            add_version(s, model, status)
        add_version(s, "b", "rejected")
        s.commit()

    got = scrape(empty_url, QueueReading("training.requests", 7, 0.01))
    jobs = {lb[0][1]: v for (n, lb), v in got.items() if n == "colecionador_jobs"}
    # the 4 add_version jobs are queued too
    assert jobs == {
        "queued": 6,
        "training": 2,
        "evaluating": 0,
        "success": 3,
        "failed": 1,
        "cancelled": 1,
    }
    assert got[("colecionador_outbox_backlog", ())] == 2
    assert got[("colecionador_outbox_oldest_age_seconds", ())] == pytest.approx(120, abs=5)
    assert got[("colecionador_job_resubmissions_total", ())] == 2
    gate = {lb: v for (n, lb), v in got.items() if n == "colecionador_gate_outcomes_total"}
    assert gate == {
        (("model", "a"), ("outcome", "approved")): 2,
        (("model", "a"), ("outcome", "rejected")): 1,
        (("model", "b"), ("outcome", "rejected")): 1,
    }
    lb = (("job_id", str(run)), ("model", "digits"))
    assert got[("colecionador_running_job_images_per_second", lb)] == 150.0  # the latest
    assert got[("colecionador_running_job_data_wait_ratio", lb)] == 0.25
    assert got[("colecionador_running_job_epoch", lb)] == 2
    before_any = (("job_id", str(fresh)), ("model", "m"))
    assert got[("colecionador_running_job_epoch", before_any)] == 0
    assert ("colecionador_running_job_images_per_second", before_any) not in got

    def buckets(name: str, **labels: str) -> dict[str, float]:
        want = set(labels.items())
        return {
            dict(lb)["le"]: v
            for (n, lb), v in got.items()
            if n == name + "_bucket" and want <= set(lb)
        }

    ok = buckets("colecionador_job_duration_seconds", status="success")
    assert (ok["60.0"], ok["120.0"], ok["300.0"], ok["600.0"], ok["3600.0"]) == (0, 1, 1, 2, 2)
    assert ok["7200.0"] == ok["+Inf"] == 3
    duration = got[("colecionador_job_duration_seconds_sum", (("status", "success"),))]
    assert duration == pytest.approx(4500, abs=0.01)
    assert got[("colecionador_job_duration_seconds_count", (("status", "failed"),))] == 1
    assert ("colecionador_job_duration_seconds_count", (("status", "cancelled"),)) not in got
    queued = buckets("colecionador_job_step_duration_seconds", step="queued")
    # created at T0: started 2 s (fresh), 10 s (x3), 30 s (run), 0 s (bad) later
    assert (queued["1.0"], queued["5.0"], queued["15.0"], queued["30.0"]) == (1, 2, 5, 6)
    step_sum = (("step", "queued"),)
    assert got[("colecionador_job_step_duration_seconds_sum", step_sum)] == pytest.approx(62)
    training = (("step", "training"),)
    assert got[("colecionador_job_step_duration_seconds_count", training)] == 3
    assert got[("colecionador_job_step_duration_seconds_sum", training)] == pytest.approx(2250)
    p1 = buckets("colecionador_epoch_duration_seconds", phase="1")
    assert (p1["10.0"], p1["30.0"], p1["+Inf"]) == (0, 2, 2)
    assert got[("colecionador_epoch_duration_seconds_count", (("phase", "2"),))] == 1
    assert got[("colecionador_broker_up", ())] == 1
    assert got[("colecionador_requests_queue_ready", (("queue", "training.requests"),))] == 7


def test_a_broker_that_did_not_answer_is_up_0_and_no_depth(empty_url):
    got = scrape(empty_url, QueueReading("training.requests", None, 2.0))
    assert got[("colecionador_broker_up", ())] == 0
    assert not any(n == "colecionador_requests_queue_ready" for n, _ in got)


def test_the_route_follows_the_read_token_rule(tmp_path):
    from services.api import create_app
    from services.config import Settings

    read, write = "r-" + uuid.uuid4().hex, "w-" + uuid.uuid4().hex
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        api_read_token=SecretStr(read),
        api_token=SecretStr(write),
        broker_url=SecretStr("amqp://guest:guest@127.0.0.1:1/"),  # nobody listens
    )
    with TestClient(create_app(settings)) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
        for token in (read, write):
            r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            got = samples(r.text)
            assert got[("colecionador_jobs", (("status", "queued"),))] == 0
            assert got[("colecionador_broker_up", ())] == 0  # asked, and refused
