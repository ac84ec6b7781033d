"""Every request ends exactly once, whatever fails (issue 13), against the real services:
a SIGKILLed driver, the broker or the database away (a loopback TCP proxy the test closes
and reopens), 200 concurrent messages with duplicates, a cancel racing the end of a job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid

import aio_pika
import pytest

from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory
from services.ingress import Consumer, start_ingress, stop_ingress
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs import lifecycle, steps
from services.jobs.driver import run_job
from services.jobs.ray_jobs import RayJobs
from services.store.storage import open_store
from tests.amqp import message_count, next_message
from tests.conftest import AMQP_URL, PG_ADMIN_URL, SESSION, TINY, wait_until
from tests.raycluster import free_port
from tests.tcpproxy import TcpProxy
from training.hyperparams import Hyperparameters

pytestmark = pytest.mark.integration


def publish_all(queue: str, bodies: list[dict]) -> None:
    """Publish every body at once (one connection, concurrent publishes, confirmed)."""

    async def go() -> None:
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            from services.events import broker

            await broker.declare_requests(ch, queue)
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(
                        aio_pika.Message(json.dumps(b).encode()), routing_key=queue
                    )
                    for b in bodies
                )
            )

    asyncio.run(go())


def drain(queue: str) -> list[dict]:
    out = []
    while message_count(queue):
        out.append(next_message(queue)[0])
    return out


class RunningConsumer:
    """A Consumer (the ingress's loop) on a thread of this process."""

    def __init__(self, settings):
        self.consumer = Consumer(settings)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.consumer.run()), daemon=True)

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self.consumer

    def __exit__(self, *exc) -> None:
        self.consumer.stop()
        self.thread.join(30)


def closed_dashboard() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: submissions fail


# --------------------------------------------------------------------------- the outbox
def test_an_event_waits_in_the_outbox_while_the_broker_is_away_then_goes_out_once(
    pg_url, settings_for, make_dataset, events_queue
):
    with TcpProxy(5672) as proxy:
        settings = settings_for(
            pg_url,
            publish_events=True,
            events_queue=events_queue,
            broker_url=proxy.url("amqp://guest:guest@127.0.0.1:{port}/"),
            ray_dashboard_url=closed_dashboard(),
        )
        job, _ = create_job(
            settings,
            TrainingRequest(
                batch_id=f"outbox-{uuid.uuid4().hex[:8]}",
                dataset_uri=str(make_dataset(per_class=2)),
                hyperparameters=Hyperparameters(**TINY),
            ),
        )
        proxy.close()  # the broker is away while the job ends
        outcome = run_job(job.id, settings, say=lambda _m: None)
        assert outcome.status == "failed"
        with session_factory(pg_url)() as s:
            (event,) = repo.job_events(s, job.id)
            assert event.published_at is None and event.body == outcome.event
        assert not _declared(events_queue) or message_count(events_queue) == 0

        proxy.open()  # back: the ingress's pass publishes the backlog, once
        t0 = time.monotonic()
        asyncio.run(Consumer(settings).reconcile_once())
        backlog_s = time.monotonic() - t0
        asyncio.run(Consumer(settings).reconcile_once())  # nothing left to publish
    (body,) = drain(events_queue)
    assert body == outcome.event and body["status"] == "failed"
    assert len(body["event_id"]) == 32
    with session_factory(pg_url)() as s:
        assert repo.job_events(s, job.id)[0].published_at is not None
    print(f"\nbacklog published {backlog_s:.2f} s after the broker came back")


def test_an_event_being_published_is_claimed_by_one_publisher(pg_url, settings_for):
    """The job's driver and the ingress race on a new event: the first to claim its row
    holds it until the mark; the other skips it (no second publish), and a claim after
    the mark finds it published. A publisher that dies rolls back: still pending."""
    settings = settings_for(pg_url)
    job, _ = create_job(
        settings,
        TrainingRequest(
            batch_id=f"claim-{uuid.uuid4().hex[:8]}",
            dataset_uri="/nowhere",
            hyperparameters=Hyperparameters(**TINY),
        ),
    )
    event_id = uuid.uuid4().hex
    sf = session_factory(pg_url)
    with sf() as s:
        repo.add_event(s, event_id, job.id, "ModelEvaluation", "q", {"event_id": event_id})
        s.commit()
    first, second = sf(), sf()
    try:
        assert repo.claim_event(first, event_id)
        assert not repo.claim_event(second, event_id)  # held: skipped, not waited on
        second.rollback()
        first.rollback()  # the first publisher died before its mark
        assert repo.claim_event(second, event_id)  # pending again
        repo.mark_published(second, event_id)
        assert not repo.claim_event(first, event_id)  # published
    finally:
        first.close()
        second.close()


def _declared(queue: str) -> bool:
    try:
        message_count(queue)
        return True
    except Exception:  # noqa: BLE001 - never declared
        return False


# ----------------------------------------------------------------------- the consumer
def test_an_ingress_started_with_the_broker_away_consumes_once_it_is_back(
    pg_url, settings_for, queues
):
    requests, events = queues
    batch = f"late-{uuid.uuid4().hex[:8]}"
    with TcpProxy(5672) as proxy:
        proxy.close()
        settings = settings_for(
            pg_url,
            requests_queue=requests,
            events_queue=events,
            broker_url=proxy.url("amqp://guest:guest@127.0.0.1:{port}/"),
            ray_dashboard_url=closed_dashboard(),
            reconcile_interval_s=60,
        )
        with RunningConsumer(settings) as consumer:
            wait_until(lambda: consumer.stats["reconnects"] >= 1, 30, "a failed connect")
            assert not consumer.stats["consuming"]
            assert "consumer" in consumer.stats["last_error"]["error"]
            publish_all(requests, [{"batch_id": batch, "dataset_uri": "s3://d/nowhere/"}])
            proxy.open()
            # received counts a delivery, created its committed row: await the latter
            wait_until(lambda: consumer.stats["created"] == 1, 90, "the message recorded")
            assert consumer.stats["consuming"] and consumer.stats["received"] == 1
    with session_factory(pg_url)() as s:
        job = repo.get_job_by_batch(s, batch)
        assert job.status == "queued"
    assert lifecycle.cancel(settings, job.id, "test done")  # leave nothing queued


def test_a_database_outage_during_intake_loses_nothing_and_does_not_spin(
    settings_for, queues, tmp_path
):
    """30 s without the database: the consumer requeues what it holds once, stops
    consuming, and takes every message (one job per batch) when the database is back."""
    from tests.conftest import fresh_database

    requests, events = queues
    with fresh_database(f"colecionador_outage_{SESSION}") as url, TcpProxy(5432) as proxy:
        name = url.rsplit("/", 1)[1]
        via_proxy = PG_ADMIN_URL.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}/{name}"
        settings = settings_for(
            via_proxy,
            requests_queue=requests,
            events_queue=events,
            ray_dashboard_url=closed_dashboard(),
            reconcile_interval_s=60,
        )
        batches = [f"outage-{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
        bodies = [{"batch_id": b, "dataset_uri": "s3://d/nowhere/"} for b in batches]
        with RunningConsumer(settings) as consumer:
            wait_until(lambda: consumer.stats["consuming"], 60, "consuming")
            proxy.close()
            publish_all(requests, bodies + bodies[:4])  # 12 messages, 4 duplicates
            wait_until(lambda: consumer.stats["database_outages"] >= 1, 30, "the outage seen")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the outage: no busy loop meanwhile
                assert consumer.stats["requeued"] <= 4  # at most what it held (prefetch)
                time.sleep(1)
            received_during = consumer.stats["received"]
            proxy.open()
            wait_until(
                lambda: consumer.stats["created"] + consumer.stats["duplicates"] == 12,
                120,
                "every message recorded",
            )
            stats = dict(consumer.stats)
        assert received_during <= 4
        assert (stats["created"], stats["duplicates"], stats["dead_lettered"]) == (8, 4, 0)
        assert stats["received"] == 12 + stats["requeued"]
        with session_factory(url)() as s:
            jobs = s.query(TrainingJob).all()
            assert sorted(j.batch_id for j in jobs) == sorted(batches)
        print(f"\nrequeued {stats['requeued']} message(s) over a 30 s database outage")


def test_200_concurrent_messages_with_duplicates_make_one_job_and_one_event_each(
    pg_url, settings_for, queues
):
    requests, events = queues
    settings = settings_for(
        pg_url,
        requests_queue=requests,
        events_queue=events,
        publish_events=True,
        ray_dashboard_url=closed_dashboard(),
        reconcile_interval_s=60,
    )
    batches = [f"many-{i}-{uuid.uuid4().hex[:6]}" for i in range(100)]
    bodies = [{"batch_id": b, "dataset_uri": "s3://d/nowhere/"} for b in batches] * 2
    with RunningConsumer(settings) as consumer:
        wait_until(lambda: consumer.stats["consuming"], 60, "consuming")
        publish_all(requests, bodies)
        wait_until(
            lambda: consumer.stats["created"] + consumer.stats["duplicates"] == 200,
            180,
            "200 messages recorded",
        )
        assert (consumer.stats["created"], consumer.stats["duplicates"]) == (100, 100)
    with session_factory(pg_url)() as s:
        ids = [repo.get_job_by_batch(s, b).id for b in batches]
    for job_id in ids:  # each ends once: cancelled, with its event
        assert lifecycle.cancel(settings, job_id, "test") is not None
        assert lifecycle.cancel(settings, job_id, "test") is None
    asyncio.run(Consumer(settings).reconcile_once())  # whatever is left in the outbox
    got = drain(events)
    assert sorted(e["job_id"] for e in got) == sorted(ids)
    assert len({e["event_id"] for e in got}) == 100
    assert {e["status"] for e in got} == {"cancelled"}


# ------------------------------------------------------------------ one final word
def test_a_cancel_racing_the_end_of_evaluation_leaves_no_version(
    pg_url, ray_cluster, settings_for, make_dataset, monkeypatch
):
    settings = settings_for(pg_url)
    job, _ = create_job(
        settings,
        TrainingRequest(
            batch_id=f"race-{uuid.uuid4().hex[:8]}",
            dataset_uri=str(make_dataset(per_class=12)),
            model_name=f"race-{uuid.uuid4().hex[:6]}",
            hyperparameters=Hyperparameters(**TINY),
        ),
    )
    real_evaluate = steps.evaluate

    def evaluate_then_cancelled(*args, **kw):  # the cancel lands while it evaluates
        result = real_evaluate(*args, **kw)
        assert lifecycle.cancel(settings, job.id, "cancelled during evaluation")
        return result

    monkeypatch.setattr(steps, "evaluate", evaluate_then_cancelled)
    outcome = run_job(job.id, settings, say=lambda _m: None)
    assert (outcome.status, outcome.version) == ("cancelled", None)
    with session_factory(pg_url)() as s:
        row = repo.get_job(s, job.id)
        assert (row.status, row.error) == ("cancelled", "cancelled during evaluation")
        assert repo.job_versions(s, job.id) == []
        (event,) = repo.job_events(s, job.id)  # the cancel's, and nothing else
        assert event.body["status"] == "cancelled" and event.body["version"] is None
    assert open_store(settings).list(f"models/{job.model_name}") == []


# -------------------------------------------------------------------- a killed driver
def test_a_sigkilled_driver_is_resubmitted_and_its_job_ends_once(
    own_database, ray_cluster, settings_for, make_dataset, queues
):
    pg_url = own_database
    requests, events = queues
    settings = settings_for(
        pg_url,
        publish_events=True,
        requests_queue=requests,
        events_queue=events,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
        reconcile_interval_s=1,
        max_job_attempts=2,
    )
    batch = f"killed-{uuid.uuid4().hex[:8]}"
    hp = {**TINY, "phase1_epochs": 3, "phase2_epochs": 3}
    start_ingress(settings)
    try:
        publish_all(
            requests,
            [
                {
                    "batch_id": batch,
                    "dataset_uri": str(make_dataset(per_class=12)),
                    "model_name": "survivor",
                    "hyperparameters": hp,
                }
            ],
        )
        sf = session_factory(pg_url)

        def training_job():
            with sf() as s:
                job = repo.get_job_by_batch(s, batch)
                return job if job and repo.epoch_rows(s, job.id) else None

        job = wait_until(training_job, 300, "an epoch recorded", every=0.1)
        ray_jobs = RayJobs(settings)
        pid = int(ray_jobs.client.get_job_info(job.ray_job_id).driver_info.pid)
        os.kill(pid, signal.SIGKILL)  # as the OOM killer does
        killed = time.monotonic()

        def resubmitted():
            with sf() as s:
                return repo.get_job(s, job.id).attempts == 2

        wait_until(resubmitted, 120, "the second attempt")
        noticed_s = time.monotonic() - killed
        event, _ = next_message(events, timeout=600)
        with sf() as s:
            row = repo.get_job(s, job.id)
            first, second = repo.job_attempts(s, job.id)
            epochs = [r["epoch"] for r in repo.epoch_rows(s, job.id)]
        assert row.status == "success" and row.attempts == 2
        assert (first.ray_status, second.ray_job_id) == ("FAILED", row.ray_job_id)
        assert "-9" in (first.message or "") or "FAILED" in first.message
        assert epochs == [1, 2, 3, 4, 5, 6]  # resumed: no epoch recorded twice
        assert (event["job_id"], event["status"], event["version"]) == (job.id, "approved", 1)
        status = wait_until(
            lambda: (
                ray_jobs.client.get_job_status(second.ray_job_id).is_terminal()
                and ray_jobs.client.get_job_status(second.ray_job_id)
            ),
            120,
            "the second driver's end",
        )
        assert status.value == "SUCCEEDED"
        assert message_count(events) == 0  # exactly one event
        print(f"\nthe row changed {noticed_s:.1f} s after the driver was killed")
    finally:
        stop_ingress()


def test_an_attempt_recorded_by_a_message_and_its_duplicate_at_once_is_one_attempt(
    db_url, settings_for
):
    """Prefetch hands a message and its duplicate to two handlers at once: both submit
    the same Ray job and record it; one attempt, no IntegrityError."""
    from services.db.session import prepare_database

    settings = settings_for(db_url)
    prepare_database(settings)
    job, _ = create_job(
        settings, TrainingRequest(batch_id=f"twice-{uuid.uuid4().hex[:8]}", dataset_uri="s3://d/x/")
    )
    barrier, numbers, errors = threading.Barrier(8), [], []

    def record() -> None:
        barrier.wait()
        try:
            with session_factory(settings.db_url)() as s:
                numbers.append(repo.record_attempt(s, job.id, "sid-1"))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (numbers, errors) == ([1] * 8, [])
    with session_factory(settings.db_url)() as s:
        assert len(repo.job_attempts(s, job.id)) == 1 and repo.get_job(s, job.id).attempts == 1
