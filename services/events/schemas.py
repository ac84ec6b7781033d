"""The events that go out: ``ModelEvaluation`` (how a job ended), ``ModelPromoted`` (an
alias moved) and ``PredictionsReady`` (a bulk prediction's output is written), at least
once through the outbox (services/events/outbox.py), each with an ``event_id`` a consumer
drops a redelivery by."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.statuses import EventStatus


class EventMetrics(BaseModel):
    accuracy: float
    precision: float
    recall: float
    f1: float


class ModelEvaluationEvent(BaseModel):
    """How a job ended; at least once on the queue: ``event_id`` lets a consumer drop a
    redelivery."""

    event_id: str
    job_id: int
    batch_id: str
    model_name: str
    version: int | None = None
    status: EventStatus
    metrics: EventMetrics | None = None
    gate: dict[str, bool] = Field(default_factory=dict)
    artifact_uri: str | None = None
    finished_at: datetime
    error: str | None = None


ALIAS_PATTERN = r"^[a-z][a-z0-9_\-]{0,49}$"  # production, staging, or a name of the user's


class ModelPromotedEvent(BaseModel):
    """An alias moved (on the ``ModelPromoted`` queue, at least once, ``event_id`` to drop
    a redelivery): by the quality gate (``by: gate``) or by a person; ``overrode_gate``
    when a rejected version was promoted over the gate, with the reason they gave."""

    event_id: str
    model_name: str
    version: int
    alias: str
    from_version: int | None = None
    job_id: int | None = Field(None, description="the job that made the version")
    by: str
    reason: str | None = None
    overrode_gate: bool = False
    at: datetime


class PredictionsReadyEvent(BaseModel):
    """A bulk prediction job (mode predict) ended with its output written: ``rows`` rows
    (one per listed image; ``bad_rows`` of them an image that could not be read, with its
    reason), the parquet at ``output_uri`` and the CSV at ``csv_uri``. On the events queue,
    at least once: ``event_id`` lets a consumer drop a redelivery."""

    event_id: str
    job_id: int
    batch_id: str
    model_name: str
    version: int
    rows: int
    bad_rows: int = 0
    output_uri: str
    csv_uri: str | None = None
    finished_at: datetime
