"""The ingress's work in one process: consume ``training.requests`` (validate, record, ack,
submit), and beside it the reconciler, the event outbox and the MLflow outbox, each retried
with backoff when the broker or the database is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from sqlalchemy import text

from services.config import Settings
from services.db import repo
from services.db.session import get_engine, prepare_database, session_factory
from services.errors import one_line
from services.events import broker, mlflow_outbox, outbox
from services.intake.admission import Rejection, admit
from services.intake.records import create_job
from services.jobs.ray_jobs import RayJobs
from services.jobs.reconciler import Reconciler
from services.statuses import JobStatus

log = logging.getLogger("colecionador.ingress")


MAX_BACKOFF_S = 30.0


class Consumer:
    """The consuming loop and the reconciler, independent of Ray's actor machinery (the
    actor runs them on a thread of its own)."""

    def __init__(self, settings: Settings, ray_jobs: RayJobs | None = None, prefetch: int = 4):
        self.settings, self.prefetch = settings, prefetch
        self.ray_jobs = ray_jobs
        self.stats: dict[str, Any] = {
            "received": 0,
            "created": 0,
            "duplicates": 0,
            "dead_lettered": 0,
            "submitted": 0,
            "submit_errors": 0,
            "requeued": 0,
            "consuming": False,
            "reconnects": 0,
            "database_outages": 0,
            "last_error": None,
            "reconciler_passes": 0,
            "resubmitted": 0,
            "failed_by_reconciler": 0,
            "events_published": 0,
            "outbox_backlog": None,
            "mlflow_written": 0,
            "mlflow_backlog": None,
        }
        self._stop: asyncio.Event | None = None
        self._database_down: asyncio.Event | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.ready = threading.Event()  # set once it consumes (or has stopped)
        self.reconciler: Reconciler | None = None

    # ------------------------------------------------------------------ the loops
    async def run(self) -> None:
        """Consume until ``stop()``, reconnecting with backoff; never returns early."""
        self._stop, self._database_down = asyncio.Event(), asyncio.Event()
        self._pause_lock = asyncio.Lock()
        reconcile = asyncio.create_task(self._reconcile_forever())
        tracking = asyncio.create_task(self._mlflow_forever())
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.to_thread(prepare_database, self.settings)
                    await self._consume()
                    backoff = 1.0
                except Exception as e:  # noqa: BLE001 - broker or database away: retry
                    self._error(f"consumer: {type(e).__name__}: {one_line(e)}")
                    self.stats["reconnects"] += 1
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self.stats["consuming"] = False
            reconcile.cancel()
            tracking.cancel()
            self.ready.set()

    async def _consume(self) -> None:
        assert self._stop is not None and self._database_down is not None  # made by run()
        connection = await broker.connect(self.settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await broker.declare_requests(channel, self.settings.requests_queue)
            self._dlx = await channel.get_exchange(self.settings.requests_queue + broker.DLX_SUFFIX)
            while not self._stop.is_set():
                await self._consume_until_stop_or_outage(queue)
                if self._database_down.is_set():
                    await self._wait_for_database()

    async def _consume_until_stop_or_outage(self, queue: AbstractQueue) -> None:
        assert self._stop is not None and self._database_down is not None  # made by run()
        self._queue, self._tag = queue, await queue.consume(self.handle)
        self.stats["consuming"] = True
        self.ready.set()
        stop = asyncio.ensure_future(self._stop.wait())
        down = asyncio.ensure_future(self._database_down.wait())
        await asyncio.wait({stop, down}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        down.cancel()
        await self._pause()

    async def _pause(self) -> None:
        """Stop consuming (the messages held and not yet acked stay ours to nack). A
        second caller waits until the broker has confirmed the first one's cancel."""
        async with self._pause_lock:
            tag, self._tag = self._tag, None
            self.stats["consuming"] = False
            if tag is not None:
                assert self._queue is not None  # set with the tag
                await self._queue.cancel(tag)

    async def _wait_for_database(self) -> None:
        """Consume nothing until the database answers ``SELECT 1``, with backoff."""
        assert self._stop is not None and self._database_down is not None  # made by run()
        self.stats["database_outages"] += 1
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(_ping, self.settings.db_url)
                self._database_down.clear()
                return
            except Exception as e:  # noqa: BLE001 - still down
                self._error(f"database: {type(e).__name__}: {one_line(e)}")
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _reconcile_forever(self) -> None:
        assert self._stop is not None  # made by run()
        while not self._stop.is_set():
            await self.reconcile_once()
            await self._sleep(self.settings.reconcile_interval_s)

    async def _mlflow_forever(self) -> None:
        """The MLflow outbox, drained apart from the reconciler: a slow MLflow server
        never delays a pass (services/events/mlflow_outbox.py)."""
        if not mlflow_outbox.enabled(self.settings):
            return
        assert self._stop is not None  # made by run()
        while not self._stop.is_set():
            await self.mlflow_once()
            await self._sleep(self.settings.reconcile_interval_s)

    async def mlflow_once(self) -> None:
        """One drain of every model's MLflow records; errors are recorded, not raised."""
        done = await asyncio.to_thread(mlflow_outbox.drain_quietly, self.settings)
        self.stats["mlflow_written"] += done.sent
        self.stats["mlflow_backlog"] = await asyncio.to_thread(mlflow_outbox.backlog, self.settings)
        if done.failed:
            self._error(f"mlflow: {done.failed}")

    async def reconcile_once(self) -> None:
        """One reconciler pass and one outbox drain; errors are recorded, not raised."""
        try:
            await asyncio.to_thread(prepare_database, self.settings)
            counts = await asyncio.to_thread(self._reconciler().pass_once)
            self.stats.update(
                reconciler_passes=counts["passes"],
                resubmitted=counts["resubmitted"],
                failed_by_reconciler=counts["failed"],
            )
        except Exception as e:  # noqa: BLE001 - Ray or the database away: next pass
            self._error(f"reconciler: {type(e).__name__}: {one_line(e)}")
        try:
            if self.settings.publish_events:
                self.stats["events_published"] += await outbox.publish_pending_async(self.settings)
            self.stats["outbox_backlog"] = await asyncio.to_thread(_backlog, self.settings)
        except Exception as e:  # noqa: BLE001 - the broker is away: next pass
            self._error(f"outbox: {type(e).__name__}: {one_line(e)}")

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None  # made by run()
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    def _error(self, text: str) -> None:
        self.stats["last_error"] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "error": text,
        }
        log.warning(text)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # ------------------------------------------------------------------ messages
    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        headers = dict(message.headers or {})
        headers.update(
            {"x-reason": reason[:1000], "x-original-queue": self.settings.requests_queue}
        )
        await self._dlx.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="",
        )
        await message.ack()
        self.stats["dead_lettered"] += 1
        log.warning("dead-lettered a request: %s", reason)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """One message: admitted and recorded (then acked), or dead-lettered with its
        reason. Whatever goes wrong, the message is settled: one left unacked would hold
        a place of the prefetch window for as long as the connection lives, and a few of
        them stop intake for everyone."""
        self.stats["received"] += 1
        try:
            await self._handle(message)
        except Exception as e:  # noqa: BLE001 - a bug here must not stall the queue
            self._error(f"handle: {type(e).__name__}: {one_line(e)}")
            await self._settle(message, f"could not be handled: {type(e).__name__}: {one_line(e)}")

    async def _settle(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Dead-letter a message that could not be handled; if even that fails (the
        broker went away), reject it so that the broker requeues it."""
        if message.processed:
            return
        try:
            await self.dead_letter(message, reason)
        except Exception:  # noqa: BLE001 - the channel is gone: the broker redelivers
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        request = await asyncio.to_thread(admit, message.body, self.settings)
        if isinstance(request, Rejection):
            await self.dead_letter(message, request.reason)
            return
        try:
            job, created = await asyncio.to_thread(create_job, self.settings, request)
        except Exception as e:  # noqa: BLE001 - the database is down, or refuses the row
            await self._not_recorded(message, request.batch_id, e)
            return
        await message.ack()  # the row is committed
        self.stats["created" if created else "duplicates"] += 1
        if job.ray_job_id is None and job.status == JobStatus.QUEUED:
            try:
                await asyncio.to_thread(self._submit, job.id)
                self.stats["submitted"] += 1
            except Exception as e:  # noqa: BLE001 - the reconciler submits it later
                self.stats["submit_errors"] += 1
                self._error(f"submit job {job.id}: {type(e).__name__}: {one_line(e)}")

    async def _not_recorded(
        self, message: AbstractIncomingMessage, batch_id: str, e: Exception
    ) -> None:
        """The database is down: requeue and stop consuming until it is back. A message
        that fails again while the database answers is refused for what it is."""
        reason = f"could not record batch {batch_id}: {type(e).__name__}: {one_line(e)}"
        if message.redelivered:
            try:
                await asyncio.to_thread(_ping, self.settings.db_url)
                await self.dead_letter(message, reason)
                return
            except Exception:  # noqa: BLE001 - the database is down after all
                pass
        self._error(reason)
        assert self._database_down is not None  # made by run(), which consumes
        self._database_down.set()
        await self._pause()  # first, so that the broker does not hand it straight back
        await message.nack(requeue=True)
        self.stats["requeued"] += 1

    def _submit(self, job_id: int) -> str:
        return self._reconciler().submit(job_id)

    def _reconciler(self) -> Reconciler:
        """Made on first use: the job server may be unreachable when the ingress starts."""
        if self.reconciler is None:
            self.ray_jobs = self.ray_jobs or RayJobs(self.settings)
            self.reconciler = Reconciler(self.settings, self.ray_jobs)
        return self.reconciler


def _ping(url: str) -> None:
    with get_engine(url).connect() as c:
        c.execute(text("SELECT 1"))


def _backlog(settings: Settings) -> int:
    with session_factory(settings.db_url)() as s:
        return repo.count_pending_events(s)
