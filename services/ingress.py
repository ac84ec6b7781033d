"""The ingress: a detached, named Ray actor that consumes ``training.requests``.

For each message: validate it (a malformed one is published to the dead-letter queue with
the reason in its headers, then acked: nothing is written); insert the job (batch_id is
unique, so a redelivered or duplicated message finds the job it already made); ack once
the row is committed; then submit ``python -m services.jobs --job-id N`` as a Ray job whose
submission id is derived from the job id, so a retry finds the job it already submitted
(services/ray_jobs.py). On start it submits the queued jobs that have no Ray job yet (the
ingress died between commit and submit). Recording a job is services/records.py: this
module imports neither torch nor training code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services import broker
from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.messages import parse_request
from services.ray_jobs import NAMESPACE, RayJobs, settings_env
from services.records import create_job, prepare_database

log = logging.getLogger("colecionador.ingress")

ACTOR_NAME = "colecionador-ingress"


def submit(jobs: RayJobs, settings: Settings, job_id: int) -> str:
    """Submit job ``job_id`` as a Ray job (idempotent) and record its submission id."""
    sid = jobs.submit(job_id)
    with session_factory(settings.db_url)() as s:
        repo.set_ray_job_id(s, job_id, sid)
    return sid


def submit_pending(jobs: RayJobs, settings: Settings) -> list[int]:
    """Submit every queued job that has no Ray job yet; returns their ids."""
    with session_factory(settings.db_url)() as s:
        pending = [j.id for j in repo.list_jobs(s, status="queued", limit=1000)
                   if j.ray_job_id is None]
    for job_id in sorted(pending):
        submit(jobs, settings, job_id)
    return sorted(pending)


class Consumer:
    """The consuming loop, independent of Ray (the actor runs it on its own thread)."""

    def __init__(self, settings: Settings, ray_jobs: RayJobs | None = None,
                 prefetch: int = 4):
        self.settings, self.prefetch = settings, prefetch
        self.ray_jobs = ray_jobs
        self.stats = {"received": 0, "created": 0, "duplicates": 0, "dead_lettered": 0,
                      "submitted": 0, "submit_errors": 0, "recovered": 0}
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()

    async def run(self) -> None:
        self._stop = asyncio.Event()
        prepare_database(self.settings)
        self.ray_jobs = self.ray_jobs or RayJobs(self.settings)
        self.stats["recovered"] += len(await asyncio.to_thread(self._recover))
        connection = await broker.connect(self.settings.broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await broker.declare_requests(channel, self.settings.requests_queue)
            self._dlx = await channel.get_exchange(self.settings.requests_queue +
                                                   broker.DLX_SUFFIX)
            tag = await queue.consume(self.handle)
            self.ready.set()
            await self._stop.wait()
            await queue.cancel(tag)

    def _recover(self) -> list[int]:
        try:
            return submit_pending(self.ray_jobs, self.settings)
        except Exception as e:  # noqa: BLE001 - Ray may be briefly unreachable
            log.warning("could not submit pending jobs: %s", e)
            return []

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        headers = dict(message.headers or {})
        headers.update({"x-reason": reason[:1000],
                        "x-original-queue": self.settings.requests_queue})
        await self._dlx.publish(aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="")
        await message.ack()
        self.stats["dead_lettered"] += 1
        log.warning("dead-lettered a request: %s", reason)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        self.stats["received"] += 1
        try:
            request = parse_request(message.body)
        except ValueError as e:
            await self.dead_letter(message, str(e))
            return
        try:
            job, created = await asyncio.to_thread(create_job, self.settings, request)
        except Exception as e:  # noqa: BLE001 - the database is down: try again later
            log.error("could not record batch %s: %s", request.batch_id, e)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return
        await message.ack()  # the row is committed
        self.stats["created" if created else "duplicates"] += 1
        if job.ray_job_id is None and job.status == "queued":
            try:
                await asyncio.to_thread(submit, self.ray_jobs, self.settings, job.id)
                self.stats["submitted"] += 1
            except Exception as e:  # noqa: BLE001 - recovered on the next start
                self.stats["submit_errors"] += 1
                log.error("could not submit job %s: %s", job.id, e)


def _make_actor_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class Ingress:
        """Runs a Consumer on its own thread and event loop; survives restarts (the
        constructor starts consuming again and submits what is pending)."""

        def __init__(self, env: dict[str, str], prefetch: int = 4):
            os.environ.update(env)
            self.consumer = Consumer(Settings(), prefetch=prefetch)
            self.error: str | None = None
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

        def _run(self) -> None:
            try:
                asyncio.run(self.consumer.run())
            except Exception as e:  # noqa: BLE001 - reported by status()
                self.error = f"{type(e).__name__}: {e}"
                self.consumer.ready.set()

        def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
            self.consumer.ready.wait(timeout)
            return self.status()

        def status(self) -> dict[str, Any]:
            return {"running": self.thread.is_alive() and self.consumer.ready.is_set(),
                    "error": self.error, **self.consumer.stats}

        def stop(self) -> dict[str, Any]:
            self.consumer.stop()
            self.thread.join(30)
            return self.status()

    return Ingress


def start_ingress(settings: Settings, prefetch: int = 4) -> Any:
    """Create (or find) the detached, named ingress actor and wait until it consumes."""
    import ray
    actor = _make_actor_class().options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
        get_if_exists=True).remote(settings_env(settings), prefetch)
    status = ray.get(actor.wait_ready.remote())
    if status["error"]:
        raise RuntimeError(f"ingress failed to start: {status['error']}")
    return actor


def get_ingress() -> Any:
    import ray
    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)


def stop_ingress() -> dict[str, Any]:
    import ray
    actor = get_ingress()
    status = ray.get(actor.stop.remote())
    ray.kill(actor)
    return status
