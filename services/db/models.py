"""SQLAlchemy 2.0 models of the four tables of DESIGN.md (PostgreSQL; SQLite embedded).

Beyond DESIGN.md, training_jobs carries model_name (a job versions a model, so it must know
which), the scaling it ran with (num_workers, use_gpu: batch_size is per worker, so the
effective batch depends on them) and the request as received.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.statuses import JobStatus, TuningRunStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    # GET /jobs?status=: the filter and the newest-first order in one index (migration 0004)
    __table_args__ = (Index("ix_training_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default=JobStatus.QUEUED)
    mode: Mapped[str] = mapped_column(String(10), default="train")
    model_name: Mapped[str] = mapped_column(String(200))
    dataset_uri: Mapped[str] = mapped_column(Text)
    total_images: Mapped[int | None] = mapped_column(Integer)
    ray_job_id: Mapped[str | None] = mapped_column(String(200))  # the latest attempt's
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    accuracy: Mapped[float | None] = mapped_column(Float)
    training_time_s: Mapped[float | None] = mapped_column(Float)
    num_workers: Mapped[int | None] = mapped_column(Integer)
    use_gpu: Mapped[bool | None] = mapped_column(Boolean)
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    metrics: Mapped[list[TrainingMetric]] = relationship(
        back_populates="job", order_by="TrainingMetric.epoch", cascade="all, delete-orphan"
    )
    hyperparameters: Mapped[list[Hyperparameter]] = relationship(
        back_populates="job", cascade="all, delete-orphan"
    )


class TrainingMetric(Base):
    __tablename__ = "training_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_training_metrics_job_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    phase: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    epoch_time_s: Mapped[float | None] = mapped_column(Float)
    images_per_s: Mapped[float | None] = mapped_column(Float)  # migration 0009
    data_wait: Mapped[float | None] = mapped_column(Float)  # share of train time waiting
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[TrainingJob] = relationship(back_populates="metrics")


class Hyperparameter(Base):
    """One row per effective hyperparameter of a job (defaults included); value is JSON."""

    __tablename__ = "hyperparameters"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)

    job: Mapped[TrainingJob] = relationship(back_populates="hyperparameters")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_name", "version", name="uq_model_versions_name_version"),
        # a model's latest approved version, GET /models (migration 0004)
        Index("ix_model_versions_name_status_version", "model_name", "status", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    accuracy: Mapped[float] = mapped_column(Float)
    precision: Mapped[float] = mapped_column(Float)
    recall: Mapped[float] = mapped_column(Float)
    f1: Mapped[float] = mapped_column(Float)
    roc_auc: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20))  # a GateStatus
    gate: Mapped[dict[str, Any]] = mapped_column(JSONType)  # every rule's outcome
    model_path: Mapped[str] = mapped_column(Text)
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # lineage (migration 0007): training.data.fingerprint of the listing it was trained on
    # (paths, classes, content stamps, image size); None for versions from before it
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))


class JobAttempt(Base):
    """One Ray job that ran (or runs) a job: the first submission, then one per driver
    death the reconciler resubmitted (services/jobs/reconciler.py)."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ...
    ray_job_id: Mapped[str] = mapped_column(String(200))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ray_status: Mapped[str | None] = mapped_column(String(20))  # what Ray said at the end
    message: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """The outbox: an event is written in the same transaction as the change it reports
    (a job's final status), then published with publisher confirms and marked."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_unpublished", "published_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the event_id
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))  # ModelEvaluation
    queue: Mapped[str | None] = mapped_column(String(200))  # None: not to be published
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# ----------------------------------------------------------------- tuning (issue 5)


class TuningRun(Base):
    """One Ray Tune search of a ``mode: tune`` job: the grid, how it was searched, the
    folds, and the config that won (merged into the job's hyperparameters)."""

    __tablename__ = "tuning_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default=TuningRunStatus.RUNNING)
    grid: Mapped[dict[str, Any]] = mapped_column(JSONType)
    base_hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    k_folds: Mapped[int] = mapped_column(Integer)
    num_samples: Mapped[int] = mapped_column(Integer, default=1)
    metric: Mapped[str] = mapped_column(String(50))
    mode: Mapped[str] = mapped_column(String(10))  # min | max
    scheduler: Mapped[str] = mapped_column(String(20))  # asha | fifo
    grace_period: Mapped[int | None] = mapped_column(Integer)
    reduction_factor: Mapped[float | None] = mapped_column(Float)
    max_t: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # per trial
    folds: Mapped[list[Any] | None] = mapped_column(JSONType)  # train / val size of each
    best_trial_index: Mapped[int | None] = mapped_column(Integer)
    best_config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    epochs_run: Mapped[int | None] = mapped_column(Integer)  # iterations, all trials
    fold_epochs_run: Mapped[int | None] = mapped_column(Integer)  # x folds actually trained
    wall_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    trials: Mapped[list[TuningTrial]] = relationship(
        back_populates="run", order_by="TuningTrial.trial_index", cascade="all, delete-orphan"
    )


class TuningTrial(Base):
    """One config of a search: mean and std over folds (at the last reported epoch and at
    its best epoch), the per-fold figures of every epoch, and how it ended."""

    __tablename__ = "tuning_trials"
    __table_args__ = (UniqueConstraint("run_id", "trial_index", name="uq_tuning_trials_run_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("tuning_runs.id", ondelete="CASCADE"), index=True
    )
    trial_index: Mapped[int] = mapped_column(Integer)  # the order Tune made the trials in
    trial_id: Mapped[str] = mapped_column(String(100))  # Ray Tune's id
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the tuned values
    status: Mapped[str] = mapped_column(String(20))  # a TrialStatus
    stopped_at: Mapped[int] = mapped_column(Integer)  # epochs trained (per fold)
    max_epochs: Mapped[int | None] = mapped_column(Integer)  # what its schedule allowed
    mean_val_loss: Mapped[float | None] = mapped_column(Float)  # at the last epoch
    std_val_loss: Mapped[float | None] = mapped_column(Float)
    mean_val_accuracy: Mapped[float | None] = mapped_column(Float)
    std_val_accuracy: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)  # by the run's metric
    best_mean: Mapped[float | None] = mapped_column(Float)
    best_std: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[list[Any]] = mapped_column(JSONType)  # per epoch: mean, std, folds[]
    error: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[TuningRun] = relationship(back_populates="trials")


# ------------------------------------------------------- aliases and promotion (issue 16)
PROMOTION_MODES = ("auto", "manual")


class ModelAlias(Base):
    """(model_name, alias) -> version: ``production``, ``staging`` or any name of the
    user's. Moved only through services.registry.promotion, each move recorded in alias_moves."""

    __tablename__ = "model_aliases"

    model_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    moved_by: Mapped[str] = mapped_column(String(200))


class AliasMove(Base):
    """The audit of every alias move: who, when, why, from which version to which, and
    whether it overrode the quality gate (a rejected version promoted by a person)."""

    __tablename__ = "alias_moves"
    __table_args__ = (Index("ix_alias_moves_model_id", "model_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(50))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    moved_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    overrode_gate: Mapped[bool] = mapped_column(Boolean, default=False)
    event_id: Mapped[str | None] = mapped_column(String(36))  # its ModelPromoted event
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelPromotion(Base):
    """A model's promotion mode: ``auto`` (the default when there is no row: an approved
    version becomes ``production``) or ``manual`` (only POST .../promote moves it)."""

    __tablename__ = "model_promotion"

    model_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    mode: Mapped[str] = mapped_column(String(10))  # auto | manual
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# ------------------------------------------------------------- MLflow tracking (issue 28)
class MlflowRecord(Base):
    """The MLflow outbox: one thing a job writes to MLflow (its run's tags, params, an
    epoch's metrics, a version's artifacts, a registration, an alias move, the run's end),
    staged in the transaction of the row it mirrors and sent by
    services/events/mlflow_outbox.py, in id order per model. ``lease_until``: a drainer
    holds it until then; ``refused``: MLflow answered it with a 4xx, never sent again."""

    __tablename__ = "mlflow_outbox"
    __table_args__ = (Index("ix_mlflow_outbox_pending", "sent_at", "refused", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(200))  # the experiment; the order
    kind: Mapped[str] = mapped_column(String(20))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)  # the last failure
