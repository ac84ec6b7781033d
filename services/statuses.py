"""The status words, one definition each, shared by the rows (services/db/models.py), the
events (services/events/schemas.py) and the API (services/api/schemas.py); the gate's
words are training's (training/verdicts.py) and a trial's are tuning's (tuning/report.py),
re-exported here.

StrEnums: each member *is* its string (``JobStatus.QUEUED == "queued"``), so a row, a JSON
body and a metric label hold exactly the words they held before. Pure: no torch, no
database."""

from __future__ import annotations

from enum import StrEnum

from training.verdicts import GateStatus
from tuning.report import TrialStatus

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "TUNING_RUN_STATUSES",
    "TUNING_TRIAL_STATUSES",
    "EventStatus",
    "GateStatus",
    "JobStatus",
    "TrialStatus",
    "TuningRunStatus",
]


class JobStatus(StrEnum):
    """A training job's status (training_jobs.status)."""

    QUEUED = "queued"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
FINAL_STATUSES = (JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.TRAINING, JobStatus.EVALUATING)


class EventStatus(StrEnum):
    """How a job ended, as its ModelEvaluation event says: the gate's verdict, or the
    job's end when no version was made."""

    APPROVED = "approved"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TuningRunStatus(StrEnum):
    """A tuning run's status (tuning_runs.status)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


TUNING_RUN_STATUSES: tuple[TuningRunStatus, ...] = tuple(TuningRunStatus)
TUNING_TRIAL_STATUSES: tuple[TrialStatus, ...] = tuple(TrialStatus)
