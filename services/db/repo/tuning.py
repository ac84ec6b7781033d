"""Tuning runs and their trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import (
    TuningRun,
    TuningTrial,
    utcnow,
)
from services.db.repo.jobs import replace_hyperparameters
from services.db.repo.values import json_safe
from services.statuses import TUNING_RUN_STATUSES


def create_tuning_run(s: Session, job_id: int, **fields: Any) -> TuningRun:
    """Insert a ``running`` tuning run of a job (grid, base hyperparameters, settings)."""
    run = TuningRun(job_id=job_id, status="running", **{k: json_safe(v) for k, v in fields.items()})
    s.add(run)
    s.commit()
    return run


def record_trial(s: Session, run_id: int, *, trial_index: int, **fields: Any) -> TuningTrial:
    """Insert or update the row of one trial ((run_id, trial_index) is unique)."""
    row = s.scalar(
        select(TuningTrial).where(
            TuningTrial.run_id == run_id, TuningTrial.trial_index == trial_index
        )
    )
    if row is None:
        row = TuningTrial(run_id=run_id, trial_index=trial_index)
        s.add(row)
    for k, v in fields.items():
        setattr(row, k, json_safe(v))
    row.recorded_at = utcnow()
    s.commit()
    return row


def set_trial_ranks(s: Session, run_id: int, ranks: dict[int, int | None]) -> None:
    """``ranks``: trial_index -> rank (1 is best)."""
    for row in s.scalars(select(TuningTrial).where(TuningTrial.run_id == run_id)).all():
        row.rank = ranks.get(row.trial_index)
    s.commit()


def finish_tuning_run(
    s: Session,
    run_id: int,
    status: str,
    *,
    job_hyperparameters: dict[str, Any] | None = None,
    **fields: Any,
) -> TuningRun:
    """Close a run (``completed`` or ``failed``); with ``job_hyperparameters`` the job's
    effective hyperparameters are replaced in the same transaction, so a run is never
    completed without its winner merged into the job."""
    if status not in TUNING_RUN_STATUSES:
        raise ValueError(f"unknown tuning run status {status!r}")
    run = s.get(TuningRun, run_id)
    if run is None:
        raise LookupError(f"no tuning run {run_id}")
    run.status, run.finished_at = status, utcnow()
    for k, v in fields.items():
        setattr(run, k, json_safe(v))
    if job_hyperparameters is not None:
        replace_hyperparameters(s, run.job_id, job_hyperparameters)
    s.commit()
    return run


def tuning_runs(s: Session, job_id: int) -> Sequence[TuningRun]:
    return s.scalars(
        select(TuningRun).where(TuningRun.job_id == job_id).order_by(TuningRun.id)
    ).all()


def latest_tuning_run(s: Session, job_id: int) -> TuningRun | None:
    return s.scalar(
        select(TuningRun).where(TuningRun.job_id == job_id).order_by(TuningRun.id.desc()).limit(1)
    )


def tuning_trials(s: Session, run_id: int) -> Sequence[TuningTrial]:
    """The trials of a run, best first where ranked, then in the order Tune made them."""
    return s.scalars(
        select(TuningTrial)
        .where(TuningTrial.run_id == run_id)
        .order_by(TuningTrial.rank.is_(None), TuningTrial.rank, TuningTrial.trial_index)
    ).all()
