"""A job's final word from outside its driver: a cancel (HTTP) or a failure the reconciler
finds (the driver died past its last attempt). Each is one conditional update with its
event in the same transaction (services/outbox.py), so the final status is decided once
and the event always matches the row."""

from __future__ import annotations

from typing import Any

from services import outbox
from services.config import Settings
from services.db import repo
from services.db.session import session_factory


def cancel(
    settings: Settings, job_id: int, reason: str, *, only_if_queued_without_ray_job: bool = False
) -> dict[str, Any] | None:
    """Mark the job ``cancelled`` with its event unless it has already ended (or, with
    ``only_if_queued_without_ray_job``, unless it left the queue or has a Ray job).
    Returns the event, or None when the job's status did not allow it."""
    with session_factory(settings.db_url)() as s:
        if not repo.cancel_job(
            s,
            job_id,
            error=reason,
            commit=False,
            only_if_queued_without_ray_job=only_if_queued_without_ray_job,
        ):
            s.rollback()
            return None
        job = repo.get_job(s, job_id)
        body = outbox.stage(s, settings, outbox.job_event(job, "cancelled", error=reason))
        s.commit()
    outbox.try_publish(settings, job_id)
    return body


def fail(settings: Settings, job_id: int, reason: str) -> dict[str, Any] | None:
    """Mark an active job ``failed`` with its event; None if it has already ended."""
    with session_factory(settings.db_url)() as s:
        if not repo.finish_job(s, job_id, "failed", commit=False, error=reason):
            s.rollback()
            return None
        job = repo.get_job(s, job_id)
        body = outbox.stage(s, settings, outbox.job_event(job, "failed", error=reason))
        s.commit()
    return body
