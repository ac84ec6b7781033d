"""The transactional outbox: every event is written to the ``events`` table in the same
transaction as the change it reports (a job's final status), and published from there.

``stage`` adds an event to the caller's transaction. ``publish_pending`` publishes the
unpublished ones with publisher confirms and marks each after the broker confirmed it:
at least once (a crash between the confirm and the mark publishes it again), each with
its ``event_id`` so a consumer drops a redelivery. Each event's row is locked from its
publish to its mark (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite ignores it), so the
job's driver and the ingress's drain, racing on the same new event, publish it once.
The ingress drains the outbox on every reconciler pass; a job driver and the one-shot
CLI publish their own event right away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory
from services.events.schemas import (
    EventMetrics,
    ModelEvaluationEvent,
    ModelPromotedEvent,
    PredictionsReadyEvent,
)

log = logging.getLogger("colecionador.outbox")

EVALUATION = "ModelEvaluation"
PROMOTED = "ModelPromoted"
PREDICTIONS = "PredictionsReady"


def job_event(
    job: TrainingJob,
    status: str,
    *,
    version: int | None = None,
    metrics: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    artifact_uri: str | None = None,
    error: str | None = None,
) -> ModelEvaluationEvent:
    """The ModelEvaluation event of a job that ended: approved / rejected (with its
    version), failed or cancelled."""
    return ModelEvaluationEvent(
        event_id=uuid.uuid4().hex,
        job_id=job.id,
        batch_id=job.batch_id,
        model_name=job.model_name,
        version=version,
        status=status,
        metrics=EventMetrics(**{k: metrics[k] for k in EventMetrics.model_fields})
        if metrics
        else None,
        gate={r["metric"]: r["passed"] for r in (gate or {}).get("rules", [])},
        artifact_uri=artifact_uri,
        finished_at=datetime.now(UTC),
        error=error,
    )


Event = ModelEvaluationEvent | ModelPromotedEvent | PredictionsReadyEvent


def stage(s: Session, settings: Settings, event: Event) -> dict[str, Any]:
    """Add ``event`` to the session's transaction (the caller commits); it goes to its
    queue (``events_queue``, or ``promotions_queue`` for a ModelPromoted) unless events
    are off (``publish_events``). Returns its body."""
    body: dict[str, Any] = json.loads(event.model_dump_json())
    promoted = isinstance(event, ModelPromotedEvent)
    queue = settings.promotions_queue if promoted else settings.events_queue
    kind = (
        PROMOTED
        if promoted
        else PREDICTIONS
        if isinstance(event, PredictionsReadyEvent)
        else EVALUATION
    )
    repo.add_event(
        s, event.event_id, event.job_id, kind, queue if settings.publish_events else None, body
    )
    return body


def _pending(
    sf: Callable[[], Session], limit: int, job_id: int | None
) -> list[tuple[str, str, dict[str, Any]]]:
    """The unpublished events (id, queue, body), oldest first."""
    with sf() as s:
        return [
            (e.id, e.queue, e.body)
            for e in repo.pending_events(s, limit=limit, job_id=job_id)
            if e.queue is not None  # as the query has it
        ]


def _claim(sf: Callable[[], Session], event_id: str) -> Session | None:
    """A session holding the event's row lock, or None (published, or another publisher,
    the job's driver or the ingress, is publishing it)."""
    s = sf()
    try:
        if repo.claim_event(s, event_id):
            return s
    except Exception:
        s.close()
        raise
    s.close()
    return None


def _mark(s: Session, event_id: str) -> None:
    try:
        repo.mark_published(s, event_id)
    finally:
        s.close()


async def _publish_one(channel: Any, queue: str, event_id: str, body: dict[str, Any]) -> None:
    """One persistent message, confirmed by the broker within 10 s."""
    import aio_pika

    message = aio_pika.Message(
        json.dumps(body).encode(),
        content_type="application/json",
        message_id=event_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await asyncio.wait_for(channel.default_exchange.publish(message, routing_key=queue), 10)


async def publish_pending_async(
    settings: Settings, *, job_id: int | None = None, limit: int = 500
) -> int:
    """Publish unpublished events (of one job, or all), oldest first; returns how many.
    Raises when the broker cannot be reached: what was not confirmed stays pending."""
    sf = session_factory(settings.db_url)
    events = await asyncio.to_thread(_pending, sf, limit, job_id)
    if not events:
        return 0
    import aio_pika

    from services.events import broker

    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        declared: set[str] = set()
        published = 0
        for event_id, queue, body in events:
            # the row stays locked from here to its mark: the job's driver and the
            # ingress's drain never publish the same event at once (PostgreSQL)
            held = await asyncio.to_thread(_claim, sf, event_id)
            if held is None:
                continue
            try:
                if queue not in declared:
                    await broker.declare_events(channel, queue)
                    declared.add(queue)
                await _publish_one(channel, queue, event_id, body)
            except BaseException:
                await asyncio.to_thread(held.close)  # rolled back: still pending
                raise
            await asyncio.to_thread(_mark, held, event_id)
            published += 1
    return published


def publish_pending(settings: Settings, *, job_id: int | None = None) -> int:
    """``publish_pending_async`` for synchronous callers (the job driver, the CLI)."""
    return asyncio.run(publish_pending_async(settings, job_id=job_id))


def try_publish(settings: Settings, job_id: int) -> bool:
    """Publish a job's event now if the broker answers; otherwise it stays in the outbox
    for the ingress to publish. True if nothing of the job's is left pending."""
    if not settings.publish_events:
        return False
    try:
        publish_pending(settings, job_id=job_id)
        return True
    except Exception as e:  # noqa: BLE001 - the outbox keeps it
        log.warning(
            "event of job %s not published yet (%s): the ingress publishes it "
            "when the broker is back",
            job_id,
            e,
        )
        return False
