"""A job's final word from outside its driver: a cancel (HTTP) or a failure the reconciler
finds (the driver died past its last attempt). Each is one conditional update with its
event in the same transaction (services/events/outbox.py), so the final status is decided once
and the event always matches the row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.events import mlflow_outbox, outbox
from services.statuses import JobStatus


def cancel(settings: Settings, job_id: int, reason: str) -> dict[str, Any] | None:
    """Mark the job ``cancelled`` with its event unless it has already ended; the event
    is published right away when the broker answers. Returns the event, or None when the
    job had already ended."""
    body = _end(settings, job_id, JobStatus.CANCELLED, reason, repo.cancel_job)
    if body is not None:
        outbox.try_publish(settings, job_id)
    return body


def fail(settings: Settings, job_id: int, reason: str) -> dict[str, Any] | None:
    """Mark an active job ``failed`` with its event; None if it has already ended."""
    return _end(
        settings,
        job_id,
        JobStatus.FAILED,
        reason,
        lambda s, job_id, **kw: repo.finish_job(s, job_id, JobStatus.FAILED, **kw),
    )


def _end(
    settings: Settings, job_id: int, status: str, reason: str, update: Callable[..., bool]
) -> dict[str, Any] | None:
    """The conditional ``update`` and the job's event, committed together."""
    with session_factory(settings.db_url)() as s:
        if not update(s, job_id, error=reason, commit=False):
            s.rollback()
            return None
        job = repo.get_job(s, job_id)
        assert job is not None  # the update just matched it
        body = outbox.stage(s, settings, outbox.job_event(job, status, error=reason))
        if mlflow_outbox.tracks(s, settings, job_id=job_id):  # its MLflow run ends too
            mlflow_outbox.stage_end(s, job_id, job.model_name, status, reason)
        s.commit()
    return body
