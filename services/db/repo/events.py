"""The event outbox: events written with the job's rows, claimed and published later."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.db.models import (
    Event,
    utcnow,
)
from services.db.repo.values import json_safe


def add_event(
    s: Session,
    event_id: str,
    job_id: int | None,
    kind: str,
    queue: str | None,
    body: dict[str, Any],
) -> None:
    """Stage an event in the outbox; the caller commits it with the change it reports."""
    s.add(Event(id=event_id, job_id=job_id, kind=kind, queue=queue, body=json_safe(body)))


def pending_events(s: Session, limit: int = 100, job_id: int | None = None) -> Sequence[Event]:
    """Unpublished events that have a queue, oldest first."""
    q = (
        select(Event)
        .where(Event.published_at.is_(None), Event.queue.is_not(None))
        .order_by(Event.created_at, Event.id)
        .limit(limit)
    )
    if job_id is not None:
        q = q.where(Event.job_id == job_id)
    return s.scalars(q).all()


def count_pending_events(s: Session) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.published_at.is_(None), Event.queue.is_not(None))
        )
        or 0
    )


def claim_event(s: Session, event_id: str) -> bool:
    """Lock an unpublished event for this session's transaction (PostgreSQL: ``FOR
    UPDATE SKIP LOCKED``): False when it is published already or another publisher
    holds it. The lock ends with the transaction (``mark_published`` commits it; a
    publisher that dies rolls it back, and the event stays pending)."""
    q = (
        select(Event.id)
        .where(Event.id == event_id, Event.published_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return s.scalar(q) is not None


def mark_published(s: Session, event_id: str) -> None:
    s.execute(
        update(Event)
        .where(Event.id == event_id, Event.published_at.is_(None))
        .values(published_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    s.commit()


def job_events(s: Session, job_id: int) -> Sequence[Event]:
    return s.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.created_at)).all()
