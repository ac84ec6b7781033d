"""Jobs: create, read, move through their statuses (each a conditional UPDATE), cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import (
    Hyperparameter,
    TrainingJob,
    utcnow,
)
from services.db.repo.values import json_safe
from services.statuses import ACTIVE_STATUSES, FINAL_STATUSES, JobStatus


def create_job(
    s: Session,
    *,
    batch_id: str,
    dataset_uri: str,
    model_name: str,
    mode: str = "train",
    total_images: int | None = None,
    hyperparameters: dict[str, Any],
    request: dict[str, Any] | None = None,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[TrainingJob, bool]:
    """Insert a queued job and its effective hyperparameters in one transaction.

    batch_id is unique: a known batch_id returns the existing job and ``created=False``,
    so a redelivered or duplicated request never starts a second job.
    """
    existing = get_job_by_batch(s, batch_id)
    if existing is not None:
        return existing, False
    job = TrainingJob(
        batch_id=batch_id,
        dataset_uri=dataset_uri,
        model_name=model_name,
        mode=mode,
        total_images=total_images,
        status=JobStatus.QUEUED,
        request=request,
        num_workers=num_workers,
        use_gpu=use_gpu,
    )
    job.hyperparameters = [Hyperparameter(name=k, value=v) for k, v in hyperparameters.items()]
    s.add(job)
    try:
        s.commit()
    except IntegrityError:  # another process inserted the same batch_id just now
        s.rollback()
        existing = get_job_by_batch(s, batch_id)
        if existing is None:
            raise
        return existing, False
    return job, True


def get_job(s: Session, job_id: int) -> TrainingJob | None:
    return s.get(TrainingJob, job_id)


def get_job_by_batch(s: Session, batch_id: str) -> TrainingJob | None:
    return s.scalar(select(TrainingJob).where(TrainingJob.batch_id == batch_id))


def list_jobs(
    s: Session, status: str | None = None, limit: int = 50, offset: int = 0
) -> Sequence[TrainingJob]:
    q = select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit).offset(offset)
    if status:
        q = q.where(TrainingJob.status == status)
    return s.scalars(q).all()


RUNNABLE = ACTIVE_STATUSES


def _update_job_if(
    s: Session, job_id: int, conditions: list[Any], *, commit: bool = True, **values: Any
) -> bool:
    """One conditional UPDATE of a job (committed unless ``commit`` is False): it never
    overwrites a status another process has just set. True if the job matched
    ``conditions`` and was updated."""
    done = (
        cast(  # an UPDATE's result: a CursorResult, which has rowcount
            CursorResult[Any],
            s.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, *conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        == 1
    )
    if commit:
        s.commit()
    return done


def start_job(s: Session, job_id: int, ray_job_id: str | None = None) -> bool:
    """queued / training / evaluating -> training (started_at stamped once): a job
    cancelled in the meantime stays cancelled. True if started."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        status=JobStatus.TRAINING,
        started_at=func.coalesce(TrainingJob.started_at, utcnow()),
        ray_job_id=func.coalesce(TrainingJob.ray_job_id, ray_job_id),
    )


def mark_evaluating(s: Session, job_id: int, training_time_s: float) -> bool:
    """training -> evaluating, unless the job was cancelled meanwhile."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        status=JobStatus.EVALUATING,
        training_time_s=training_time_s,
    )


def finish_job(s: Session, job_id: int, status: str, *, commit: bool = True, **fields: Any) -> bool:
    """success / failed, stamping finished_at, unless the job was cancelled meanwhile.
    With ``commit=False`` the caller commits (the version row and the final status in one
    transaction)."""
    if status not in (JobStatus.SUCCESS, JobStatus.FAILED):
        raise ValueError(f"not a finishing status: {status!r}")
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        commit=commit,
        status=status,
        finished_at=utcnow(),
        **fields,
    )


def hyperparameters(s: Session, job_id: int) -> dict[str, Any]:
    rows = s.scalars(select(Hyperparameter).where(Hyperparameter.job_id == job_id)).all()
    return {r.name: r.value for r in rows}


def set_ray_job_id(s: Session, job_id: int, ray_job_id: str) -> None:
    """Record the Ray job that runs this job (only that column: the job may be running)."""
    job = s.get(TrainingJob, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    job.ray_job_id = ray_job_id
    s.commit()


def set_use_gpu(s: Session, job_id: int, use_gpu: bool) -> None:
    """Record whether the job trains on GPUs, once decided (only that column)."""
    s.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(use_gpu=use_gpu))
    s.commit()


def active_jobs(s: Session) -> Sequence[TrainingJob]:
    """Every job that has not ended (queued, training, evaluating), oldest first."""
    return s.scalars(
        select(TrainingJob).where(TrainingJob.status.in_(ACTIVE_STATUSES)).order_by(TrainingJob.id)
    ).all()


def count_jobs(s: Session, status: str | None = None) -> int:
    q = select(func.count()).select_from(TrainingJob)
    if status:
        q = q.where(TrainingJob.status == status)
    return int(s.scalar(q) or 0)


def cancel_job(
    s: Session,
    job_id: int,
    *,
    error: str | None = None,
    commit: bool = True,
) -> bool:
    """Mark a job ``cancelled`` unless it is already final (success, failed, cancelled).
    One conditional UPDATE, so it never overwrites a status another process has just
    set. True if this call cancelled it."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.not_in(FINAL_STATUSES)],
        commit=commit,
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        error=error,
    )


def replace_hyperparameters(s: Session, job_id: int, values: dict[str, Any]) -> None:
    rows = {
        r.name: r
        for r in s.scalars(select(Hyperparameter).where(Hyperparameter.job_id == job_id)).all()
    }
    for name, value in values.items():
        if name in rows:
            rows[name].value = json_safe(value)
        else:
            s.add(Hyperparameter(job_id=job_id, name=name, value=json_safe(value)))
    for name, row in rows.items():
        if name not in values:
            s.delete(row)


def set_hyperparameters(s: Session, job_id: int, values: dict[str, Any]) -> None:
    """Replace a job's effective hyperparameters (all of them) with ``values``."""
    replace_hyperparameters(s, job_id, values)
    s.commit()
