"""What the API answers: response models, each built from database rows by a ``from_row``
constructor, and the path parameters' types. NaN / inf (a diverged epoch) become null."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from services.events.schemas import ALIAS_PATTERN
from services.intake.request import MAX_INT
from services.registry.compare import Epoch, Num
from services.statuses import GateStatus, JobStatus
from services.store.artifacts import VERSION_FILES

if TYPE_CHECKING:
    StatusFilter = str
else:  # "" (all) or a status: one Literal of the words, so a bad filter's 422 names them
    StatusFilter = Literal[("", *(s.value for s in JobStatus))]

# path parameters (module level: FastAPI resolves the annotations by name)
JobId = Annotated[int, Path(ge=1, le=MAX_INT, description="the job's id")]
ModelName = Annotated[str, Path(pattern=r"^[\w.\-]+$", max_length=200)]
VersionNo = Annotated[int, Path(ge=1, le=MAX_INT)]
BatchId = Annotated[str, Path(pattern=r"^[^\x00-\x1f\x7f/]+$", max_length=200)]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class Job(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: str
    status: JobStatus
    mode: str
    model_name: str
    dataset_uri: str
    total_images: int | None = None
    ray_job_id: str | None = None
    error: str | None = None
    accuracy: Num = None
    training_time_s: Num = None
    num_workers: int | None = None
    use_gpu: bool | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class VersionRef(BaseModel):
    model_name: str
    version: int
    status: GateStatus


class JobDetail(Job):
    hyperparameters: dict[str, Any] = Field(description="every effective value")
    versions: list[VersionRef] = Field(description="the model versions this job made")

    @classmethod
    def from_row(cls, job: Any, hyperparameters: dict[str, Any], versions: list[Any]) -> JobDetail:
        return cls(
            **Job.model_validate(job).model_dump(),
            hyperparameters=hyperparameters,
            versions=[
                VersionRef(model_name=v.model_name, version=v.version, status=v.status)
                for v in versions
            ],
        )


class JobPage(BaseModel):
    items: list[Job]
    total: int = Field(description="jobs matching the filter")
    limit: int
    offset: int


class MetricRow(Epoch):  # an epoch's figures (the ones compare overlays) and its time
    epoch_time_s: Num = None


class Submitted(BaseModel):
    job_id: int
    batch_id: str
    status: JobStatus
    created: bool = Field(description="false: a known batch_id, the existing job")
    published: bool = Field(description="the request went out on the requests queue")


class Cancelled(BaseModel):
    job_id: int
    status: JobStatus
    ray_job_id: str | None = None
    ray_job_status: str | None = Field(None, description="the Ray job's status after the stop")


class GateRuleOut(BaseModel):
    metric: str
    threshold: float
    value: Num
    passed: bool
    op: Literal[">", "<"] = ">"  # value op threshold (ECE: lower is better)


class Gate(BaseModel):
    status: GateStatus
    rules: list[GateRuleOut]

    @classmethod
    def from_row(cls, raw: dict[str, Any] | None, status: str) -> Gate:
        raw = raw or {}
        return cls(
            status=raw.get("status", status), rules=[GateRuleOut(**r) for r in raw.get("rules", [])]
        )


class VersionSummary(BaseModel):
    model_name: str
    version: int
    job_id: int
    status: GateStatus
    accuracy: Num
    precision: Num
    recall: Num
    f1: Num
    roc_auc: Num = None
    artifact_uri: str
    trained_at: datetime

    @classmethod
    def from_row(cls, mv: Any) -> VersionSummary:
        return cls(
            model_name=mv.model_name,
            version=mv.version,
            job_id=mv.job_id,
            status=mv.status,
            accuracy=mv.accuracy,
            precision=mv.precision,
            recall=mv.recall,
            f1=mv.f1,
            roc_auc=mv.roc_auc,
            artifact_uri=mv.model_path,
            trained_at=mv.trained_at,
        )


class VersionDetail(VersionSummary):
    batch_id: str | None = None
    metrics: dict[str, Num]
    gate: Gate
    artifacts: dict[str, str] = Field(description="URIs of the files of this version")
    evaluation: dict[str, Any] | None = Field(
        None,
        description="metrics.json's test section from the store: per-class figures "
        "and the confusion matrix (null if the store cannot be read)",
    )
    evaluation_error: str | None = None
    errors: dict[str, Any] | None = Field(
        None,
        description="errors.json: the most-confused class pairs and the test images "
        "wrong with the highest confidence (null if not stored)",
    )

    @classmethod
    def from_row(cls, mv: Any, batch_id: str | None = None) -> VersionDetail:
        base = mv.model_path.rsplit("/", 1)[0]
        return cls(
            **VersionSummary.from_row(mv).model_dump(),
            batch_id=batch_id,
            metrics={
                "accuracy": mv.accuracy,
                "precision": mv.precision,
                "recall": mv.recall,
                "f1": mv.f1,
                "roc_auc": mv.roc_auc,
            },
            gate=Gate.from_row(mv.gate, mv.status),
            artifacts={name: f"{base}/{name}" for name in VERSION_FILES},
        )


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: VersionSummary
    latest_approved: int | None = Field(None, description="the newest approved version")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelSummary:
        return cls(
            name=row["name"],
            versions=row["versions"],
            latest=VersionSummary.from_row(row["latest"]),
            latest_approved=row["latest_approved"],
        )


class ErrorOut(BaseModel):
    detail: Any


# ------------------------------------------------------- aliases and promotion (issue 16)
AliasName = Annotated[str, Field(pattern=ALIAS_PATTERN, max_length=50)]


class PromoteIn(BaseModel):
    """Move ``alias`` to this version. Over a version the gate rejected, ``reason`` is
    required: the move overrides the gate and is recorded as such. Who moved it is the
    identity of the write token (COLECIONADOR_API_WRITERS), not a field of the body."""

    model_config = ConfigDict(extra="forbid")

    alias: AliasName = "production"
    reason: str | None = Field(
        None, max_length=2000, description="why (required over a rejected version)"
    )


class PromotionModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "manual"]


class Promoted(BaseModel):
    """The ModelPromoted event of the move (as published)."""

    event_id: str
    model_name: str
    version: int
    alias: str
    from_version: int | None = None
    job_id: int | None = None
    by: str
    reason: str | None = None
    overrode_gate: bool
    at: datetime


class AliasOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alias: str
    version: int
    moved_at: datetime
    moved_by: str


class AliasMoveOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    alias: str
    from_version: int | None = None
    to_version: int
    moved_by: str
    reason: str | None = None
    overrode_gate: bool
    moved_at: datetime


class ModelAliases(BaseModel):
    model_name: str
    promotion: Literal["auto", "manual"]
    aliases: list[AliasOut]
    history: list[AliasMoveOut] = Field(description="every move, newest first")
