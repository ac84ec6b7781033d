"""Per-epoch training metrics of a job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from services.db.models import (
    TrainingMetric,
    utcnow,
)

METRIC_FIELDS = (
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_time_s",
    "images_per_s",
    "data_wait",
)


def record_epoch(s: Session, job_id: int, epoch: int, values: dict[str, Any]) -> None:
    """Upsert the row of one epoch: (job_id, epoch) is unique, so a resumed run that
    reports an epoch again overwrites it instead of recording it twice."""
    row = {
        "job_id": job_id,
        "epoch": epoch,
        "recorded_at": utcnow(),
        **{k: values.get(k) for k in METRIC_FIELDS},
    }
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(TrainingMetric).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={k: stmt.excluded[k] for k in (*METRIC_FIELDS, "recorded_at")},
    )
    s.execute(stmt)
    s.commit()


def epoch_rows(s: Session, job_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(TrainingMetric).where(TrainingMetric.job_id == job_id).order_by(TrainingMetric.epoch)
    ).all()
    return [{"epoch": r.epoch, **{k: getattr(r, k) for k in METRIC_FIELDS}} for r in rows]
