"""Repository functions: every read and write of the tables goes through here."""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import (FINAL_STATUSES, JOB_STATUSES, Hyperparameter, ModelVersion,
                                TrainingJob, TrainingMetric, utcnow)

METRIC_FIELDS = ("phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s")


def create_job(s: Session, *, batch_id: str, dataset_uri: str, model_name: str,
               mode: str = "train", total_images: int | None = None,
               hyperparameters: dict[str, Any], request: dict[str, Any] | None = None,
               num_workers: int | None = None, use_gpu: bool | None = None,
               ) -> tuple[TrainingJob, bool]:
    """Insert a queued job and its effective hyperparameters in one transaction.

    batch_id is unique: a known batch_id returns the existing job and ``created=False``,
    so a redelivered or duplicated request never starts a second job.
    """
    existing = get_job_by_batch(s, batch_id)
    if existing is not None:
        return existing, False
    job = TrainingJob(batch_id=batch_id, dataset_uri=dataset_uri, model_name=model_name,
                      mode=mode, total_images=total_images, status="queued", request=request,
                      num_workers=num_workers, use_gpu=use_gpu)
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


def list_jobs(s: Session, status: str | None = None, limit: int = 50,
              offset: int = 0) -> Sequence[TrainingJob]:
    q = select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit).offset(offset)
    if status:
        q = q.where(TrainingJob.status == status)
    return s.scalars(q).all()


def set_status(s: Session, job_id: int, status: str, **fields: Any) -> TrainingJob:
    """Move a job to ``status`` (stamping started_at / finished_at) and set other columns."""
    if status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}")
    job = s.get(TrainingJob, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    job.status = status
    if status == "training" and job.started_at is None:
        job.started_at = utcnow()
    if status in FINAL_STATUSES:
        job.finished_at = utcnow()
    for k, v in fields.items():
        setattr(job, k, v)
    s.commit()
    return job


def hyperparameters(s: Session, job_id: int) -> dict[str, Any]:
    rows = s.scalars(select(Hyperparameter).where(Hyperparameter.job_id == job_id)).all()
    return {r.name: r.value for r in rows}


def record_epoch(s: Session, job_id: int, epoch: int, values: dict[str, Any]) -> None:
    """Upsert the row of one epoch: (job_id, epoch) is unique, so a resumed run that
    reports an epoch again overwrites it instead of recording it twice."""
    row = {"job_id": job_id, "epoch": epoch, "recorded_at": utcnow(),
           **{k: values.get(k) for k in METRIC_FIELDS}}
    insert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(TrainingMetric).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={k: stmt.excluded[k] for k in (*METRIC_FIELDS, "recorded_at")})
    s.execute(stmt)
    s.commit()


def epoch_rows(s: Session, job_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(select(TrainingMetric).where(TrainingMetric.job_id == job_id)
                     .order_by(TrainingMetric.epoch)).all()
    return [{"epoch": r.epoch, **{k: getattr(r, k) for k in METRIC_FIELDS}} for r in rows]


def next_version(s: Session, model_name: str) -> int:
    current = s.scalar(select(func.max(ModelVersion.version))
                       .where(ModelVersion.model_name == model_name))
    return (current or 0) + 1


def add_version(s: Session, **fields: Any) -> ModelVersion:
    """Insert a model version; raises IntegrityError if (model_name, version) is taken."""
    mv = ModelVersion(**fields)
    s.add(mv)
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise
    return mv


def versions(s: Session, model_name: str) -> Sequence[ModelVersion]:
    return s.scalars(select(ModelVersion).where(ModelVersion.model_name == model_name)
                     .order_by(ModelVersion.version)).all()


def get_version(s: Session, model_name: str, version: int) -> ModelVersion | None:
    return s.scalar(select(ModelVersion).where(ModelVersion.model_name == model_name,
                                               ModelVersion.version == version))


def latest_version(s: Session, model_name: str,
                   status: str | None = None) -> ModelVersion | None:
    q = select(ModelVersion).where(ModelVersion.model_name == model_name)
    if status:
        q = q.where(ModelVersion.status == status)
    return s.scalar(q.order_by(ModelVersion.version.desc()).limit(1))


def job_versions(s: Session, job_id: int) -> Sequence[ModelVersion]:
    return s.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)).all()


def set_ray_job_id(s: Session, job_id: int, ray_job_id: str) -> None:
    """Record the Ray job that runs this job (only that column: the job may be running)."""
    job = s.get(TrainingJob, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    job.ray_job_id = ray_job_id
    s.commit()
