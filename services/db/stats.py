"""Read-only aggregates of the tables, for the metrics endpoint (services/metrics/): how
many jobs are in each status, the outbox's backlog, resubmissions, gate outcomes, the
running jobs' latest epoch, and duration histograms counted in SQL.

Every figure is one aggregate query (``GROUP BY`` or a sum of ``CASE`` per bucket), so a
scrape reads no rows into Python but the few running jobs; ``snapshot`` takes them all in
one session (PostgreSQL's READ COMMITTED: each query sees what was committed when it
began, so two figures may be a few milliseconds apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Float,
    Select,
    and_,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.orm import Session

from services.db.models import (
    Event,
    JobAttempt,
    ModelVersion,
    TrainingJob,
    TrainingMetric,
)
from services.statuses import JOB_STATUSES, JobStatus

# bucket bounds, in seconds
JOB_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0)
QUEUE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
EPOCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (``le`` bound -> observations at most it), count, sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float


@dataclass(frozen=True)
class RunningJob:
    job_id: int
    model_name: str
    epoch: int | None
    images_per_s: float | None
    data_wait: float | None


@dataclass(frozen=True)
class Snapshot:
    """Everything the database says at one moment (``taken_at``, UTC)."""

    taken_at: datetime
    jobs_by_status: dict[str, int]
    outbox_backlog: int
    outbox_oldest: datetime | None  # the oldest unpublished event's created_at
    resubmissions: int  # attempts after the first, ever
    gate_outcomes: dict[tuple[str, str], int]  # (model, approved | rejected) -> versions
    running: list[RunningJob]
    job_seconds: dict[str, Histogram]  # final status -> started_at .. finished_at
    queue_seconds: Histogram  # created_at .. started_at
    training_seconds: Histogram  # the train step (training_time_s)
    epoch_seconds: dict[int, Histogram] = field(default_factory=dict)  # phase -> epochs


def _aware(t: datetime | None) -> datetime | None:
    """SQLite gives naive UTC datetimes back."""
    if t is None or t.tzinfo is not None:
        return t
    return t.replace(tzinfo=UTC)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, in the dialect's own arithmetic."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


@dataclass(frozen=True)
class HistogramQuery:
    """One query: per ``grouped`` key (or one group), the observations of a value at most
    each bound, their count and sum."""

    statement: Select[Any]
    bounds: tuple[float, ...]
    grouped: bool

    def read(self, s: Session) -> dict[Any, Histogram]:
        out: dict[Any, Histogram] = {}
        for row in s.execute(self.statement).all():
            key, rest = (row[0], row[1:]) if self.grouped else (None, row)
            count, total, *per = rest
            if count:
                buckets = tuple((b, int(n or 0)) for b, n in zip(self.bounds, per))
                out[key] = Histogram(buckets, int(count), float(total or 0))
        return out


def histogram_query(
    value: ColumnExpressionArgument[Any],
    bounds: Sequence[float],
    *where: ColumnExpressionArgument[bool],
    group: ColumnExpressionArgument[Any] | None = None,
) -> HistogramQuery:
    """The histogram of ``value`` over the rows where it is not NULL and ``where`` holds."""
    v = cast(value, Float)
    cols = [func.sum(case((v <= b, 1), else_=0)) for b in bounds]
    keys: list[Any] = [group] if group is not None else []
    q = select(*keys, func.count(v), func.sum(v), *cols).where(v.is_not(None), *where)
    if group is not None:
        q = q.group_by(group)
    return HistogramQuery(q, tuple(bounds), group is not None)


@lru_cache(maxsize=4)
def histogram_queries(dialect: str) -> dict[str, HistogramQuery]:
    """The duration histograms' queries, built once per dialect (building them costs a
    scrape as much as running them)."""
    job = TrainingJob
    return {
        "job": histogram_query(
            seconds_between(dialect, job.started_at, job.finished_at),
            JOB_BUCKETS,
            job.finished_at.is_not(None),
            group=job.status,
        ),
        "queued": histogram_query(
            seconds_between(dialect, job.created_at, job.started_at), QUEUE_BUCKETS
        ),
        "training": histogram_query(job.training_time_s, JOB_BUCKETS),
        "epoch": histogram_query(
            TrainingMetric.epoch_time_s, EPOCH_BUCKETS, group=TrainingMetric.phase
        ),
    }


EMPTY = Histogram((), 0, 0.0)


def _running(s: Session) -> list[RunningJob]:
    """Jobs in ``training`` with their latest epoch row (None before the first)."""
    last = (  # the running jobs' epoch rows alone: not a scan of every epoch ever
        select(TrainingMetric.job_id, func.max(TrainingMetric.epoch).label("epoch"))
        .join(TrainingJob, TrainingJob.id == TrainingMetric.job_id)
        .where(TrainingJob.status == JobStatus.TRAINING)
        .group_by(TrainingMetric.job_id)
        .subquery()
    )
    q = (
        select(
            TrainingJob.id,
            TrainingJob.model_name,
            TrainingMetric.epoch,
            TrainingMetric.images_per_s,
            TrainingMetric.data_wait,
        )
        .select_from(TrainingJob)
        .outerjoin(last, last.c.job_id == TrainingJob.id)
        .outerjoin(
            TrainingMetric,
            and_(TrainingMetric.job_id == TrainingJob.id, TrainingMetric.epoch == last.c.epoch),
        )
        .where(TrainingJob.status == JobStatus.TRAINING)
        .order_by(TrainingJob.id)
    )
    return [RunningJob(*row) for row in s.execute(q).all()]


def snapshot(s: Session) -> Snapshot:
    """Every aggregate, read in one session."""
    by_status: dict[str, int] = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in s.execute(
        select(TrainingJob.status, func.count()).group_by(TrainingJob.status)
    ).all():
        by_status[status] = int(n)
    pending = (Event.published_at.is_(None), Event.queue.is_not(None))
    backlog, oldest = s.execute(
        select(func.count(), func.min(Event.created_at)).select_from(Event).where(*pending)
    ).one()
    resubmissions = s.scalar(
        select(func.count()).select_from(JobAttempt).where(JobAttempt.attempt > 1)
    )
    gate = {
        (m, st): int(n)
        for m, st, n in s.execute(
            select(ModelVersion.model_name, ModelVersion.status, func.count()).group_by(
                ModelVersion.model_name, ModelVersion.status
            )
        ).all()
    }
    h = {k: q.read(s) for k, q in histogram_queries(s.get_bind().dialect.name).items()}
    return Snapshot(
        taken_at=datetime.now(UTC),
        jobs_by_status=by_status,
        outbox_backlog=int(backlog or 0),
        outbox_oldest=_aware(oldest),
        resubmissions=int(resubmissions or 0),
        gate_outcomes=gate,
        running=_running(s),
        job_seconds=h["job"],
        queue_seconds=h["queued"].get(None, EMPTY),
        training_seconds=h["training"].get(None, EMPTY),
        epoch_seconds=h["epoch"],
    )
