"""The MLflow outbox: records to mirror into MLflow, claimed and settled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from services.db.models import (
    MlflowRecord,
    utcnow,
)
from services.db.repo.values import json_safe


def add_mlflow_record(
    s: Session, job_id: int | None, model_name: str, kind: str, body: dict[str, Any]
) -> None:
    """Stage one MLflow record; the caller commits it with the row it mirrors."""
    s.add(MlflowRecord(job_id=job_id, model_name=model_name, kind=kind, body=json_safe(body)))


def _unsent() -> Any:
    return (MlflowRecord.sent_at.is_(None)) & (MlflowRecord.refused.is_(False))


def pending_mlflow_records(
    s: Session, limit: int = 200, model_name: str | None = None
) -> Sequence[MlflowRecord]:
    """Records not yet written (nor refused), in the order they were staged."""
    q = select(MlflowRecord).where(_unsent()).order_by(MlflowRecord.id).limit(limit)
    if model_name is not None:
        q = q.where(MlflowRecord.model_name == model_name)
    return s.scalars(q).all()


def claim_mlflow_record(s: Session, record_id: int, until: Any) -> bool:
    """Lease an unsent record until ``until`` (one conditional UPDATE, committed): False
    when it is sent, refused, or another drainer's lease on it still runs."""
    now = utcnow()
    done = cast(  # an UPDATE's result: a CursorResult, which has rowcount
        CursorResult[Any],
        s.execute(
            update(MlflowRecord)
            .where(
                MlflowRecord.id == record_id,
                _unsent(),
                (MlflowRecord.lease_until.is_(None)) | (MlflowRecord.lease_until < now),
            )
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    s.commit()
    return bool(done == 1)


def settle_mlflow_record(
    s: Session, record_id: int, *, sent: bool, error: str | None = None, refused: bool = False
) -> None:
    """Mark a leased record sent, refused, or (neither) failed for now: its lease ends,
    the attempt is counted and its error kept."""
    values: dict[str, Any] = {"lease_until": None, "error": error, "refused": refused}
    if sent:
        values["sent_at"] = utcnow()
    s.execute(
        update(MlflowRecord)
        .where(MlflowRecord.id == record_id)
        .values(attempts=MlflowRecord.attempts + 1, **values)
        .execution_options(synchronize_session=False)
    )
    s.commit()


def has_mlflow_records(
    s: Session, *, job_id: int | None = None, model_name: str | None = None
) -> bool:
    """Whether a job (or a model) has ever had an MLflow record: it is tracked."""
    q = select(MlflowRecord.id).limit(1)
    if job_id is not None:
        q = q.where(MlflowRecord.job_id == job_id)
    if model_name is not None:
        q = q.where(MlflowRecord.model_name == model_name)
    return s.scalar(q) is not None


def mlflow_backlog(s: Session, job_id: int | None = None) -> dict[str, Any]:
    """``pending`` and ``refused`` records (of one job, or all) and the latest error."""
    where = [] if job_id is None else [MlflowRecord.job_id == job_id]
    pending = s.scalar(select(func.count()).select_from(MlflowRecord).where(_unsent(), *where))
    refused = s.scalar(
        select(func.count()).select_from(MlflowRecord).where(MlflowRecord.refused, *where)
    )
    total = s.scalar(select(func.count()).select_from(MlflowRecord).where(*where))
    error = s.scalar(
        select(MlflowRecord.error)
        .where(MlflowRecord.error.is_not(None), MlflowRecord.sent_at.is_(None), *where)
        .order_by(MlflowRecord.id.desc())
        .limit(1)
    )
    return {
        "records": int(total or 0),
        "pending": int(pending or 0),
        "refused": int(refused or 0),
        "error": error,
    }
