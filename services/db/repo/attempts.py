"""A job's attempts on Ray (one per submission) and how each ended."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import (
    JobAttempt,
    TrainingJob,
    utcnow,
)


def record_attempt(s: Session, job_id: int, ray_job_id: str) -> int:
    """A Ray job now runs job ``job_id``: the next attempt, its submission id on the row.
    Idempotent: the attempt that already has ``ray_job_id`` is not recorded twice.
    Returns the attempt's number."""
    last = _last_attempt(s, job_id)
    if last is not None and last.ray_job_id == ray_job_id:
        return last.attempt
    attempt = (last.attempt if last else 0) + 1
    try:
        s.add(JobAttempt(job_id=job_id, attempt=attempt, ray_job_id=ray_job_id))
        s.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(attempts=attempt, ray_job_id=ray_job_id)
            .execution_options(synchronize_session=False)
        )
        s.commit()
    except IntegrityError:  # a duplicate message's handler recorded the same attempt first
        s.rollback()
        last = _last_attempt(s, job_id)
        if last is None or last.ray_job_id != ray_job_id:
            raise
    return attempt


def _last_attempt(s: Session, job_id: int) -> JobAttempt | None:
    return s.scalar(
        select(JobAttempt)
        .where(JobAttempt.job_id == job_id)
        .order_by(JobAttempt.attempt.desc())
        .limit(1)
    )


def end_attempt(
    s: Session,
    job_id: int,
    ray_job_id: str,
    ray_status: str | None,
    message: str | None,
    *,
    commit: bool = True,
) -> None:
    """What Ray said when the attempt's Ray job ended (or vanished)."""
    s.execute(
        update(JobAttempt)
        .where(
            JobAttempt.job_id == job_id,
            JobAttempt.ray_job_id == ray_job_id,
            JobAttempt.ended_at.is_(None),
        )
        .values(ended_at=utcnow(), ray_status=ray_status, message=message)
        .execution_options(synchronize_session=False)
    )
    if commit:
        s.commit()


def count_attempts(s: Session, job_id: int, ray_status: str) -> int:
    """How many of the job's attempts ended with Ray status ``ray_status``."""
    n = s.scalar(
        select(func.count())
        .select_from(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.ray_status == ray_status)
    )
    return int(n or 0)


def job_attempts(s: Session, job_id: int) -> Sequence[JobAttempt]:
    return s.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
    ).all()
