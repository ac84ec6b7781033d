"""The typed inputs of a model card (services/registry/model_card.py renders them):
plain data, validated once where they are read (the version folder's documents, the
database: services/registry/card_inputs.py). ``Lineage`` is also what
GET /models/{name}/versions/{v}/lineage answers. No torch, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.statuses import GateStatus


class ClassFigures(BaseModel):
    name: str
    images: int | None = None  # in the data set (health.json's per_class)
    support: int | None = None  # in the test split
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


class TestMetrics(BaseModel):
    accuracy: float | None = None
    precision: float | None = None  # macro
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    n: int | None = None


class CalibrationSummary(BaseModel):
    temperature: float
    kept_because: str | None = None  # why T = 1 was kept, when it was
    n_bins: int = 15
    validation_images: int | None = None  # the images the fit used
    fitted_on: str | None = None  # them in words: "32 out-of-fold train + val images"
    ece_before: float | None = None
    ece_after: float | None = None
    ece_before_interval: list[float] | None = None  # 90 % bootstrap interval
    ece_after_interval: list[float] | None = None
    nll_before: float | None = None
    nll_after: float | None = None


class GateRule(BaseModel):
    metric: str
    threshold: float
    value: float | None = None
    passed: bool
    op: Literal[">", "<"] = ">"


class Finding(BaseModel):
    kind: str
    message: str
    count: int = 1


class DriftSummary(BaseModel):
    """This batch against the data of the version in production (training/drift.py)."""

    production_version: int | None = None
    total_variation: float | None = None
    chi_square_p: float | None = None
    new_classes: list[str] = Field(default_factory=list)
    missing_classes: list[str] = Field(default_factory=list)
    leakage_count: int = 0


class LabelIssue(BaseModel):
    rank: int
    path: str
    given_label: str
    likely_label: str
    confidence: float | None = None


class LabelIssuesSummary(BaseModel):
    issues_found: int = 0
    images_checked: int = 0
    source: str | None = None
    error: str | None = None  # the check could not run
    top: list[LabelIssue] = Field(default_factory=list)


class StartingWeights(BaseModel):
    """What training started from: nothing (random init), torchvision's pretrained weights
    by name, a version of a model of this registry (its model.pt), or another file."""

    kind: Literal["none", "pretrained", "model_version", "file"]
    weights: str | None = None  # the ``weights`` hyperparameter as given
    model_name: str | None = None  # kind model_version: the parent
    version: int | None = None


class Ancestor(BaseModel):
    """A version training started from (directly or through its own parent): what it was
    trained on and from what."""

    model_name: str
    version: int
    job_id: int
    dataset_uri: str | None = None
    dataset_fingerprint: str | None = None
    starting_weights: StartingWeights


class TuningSummary(BaseModel):
    """The search of a ``mode: tune`` job, whose best config this version was trained with."""

    run_id: int
    status: str
    k_folds: int
    metric: str
    mode: str
    scheduler: str
    num_samples: int = 1
    trials: int = 0
    best_config: dict[str, Any] | None = None


class Lineage(BaseModel):
    """Trained on what, from what (GET /models/{name}/versions/{v}/lineage)."""

    model_name: str
    version: int
    job_id: int
    batch_id: str | None = None
    mode: str = "train"
    dataset_uri: str | None = None
    dataset_fingerprint: str | None = Field(
        None, description="training.data.fingerprint of the listing (null: before migration 0007)"
    )
    starting_weights: StartingWeights
    hyperparameters: dict[str, Any] = Field(description="every effective value")
    changed_hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="the values that differ from the defaults"
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="the default of each changed value"
    )
    tuning: TuningSummary | None = None
    ancestors: list[Ancestor] = Field(
        default_factory=list,
        description="the parent version, its parent, ... (nearest first; at most 10)",
    )


class Promotion(BaseModel):
    """An alias moved to this version: who, when, why."""

    alias: str
    from_version: int | None = None
    by: str
    reason: str | None = None
    overrode_gate: bool = False
    at: datetime


class ModelCard(BaseModel):
    model_name: str
    version: int
    status: GateStatus
    trained_at: datetime | None = None
    classes: list[ClassFigures]
    split: dict[str, int] = Field(default_factory=dict)
    images: int | None = None
    skipped_images: int = 0
    test: TestMetrics = Field(default_factory=TestMetrics)
    confusion: list[list[int]] = Field(default_factory=list)
    calibration: CalibrationSummary | None = None
    gate: list[GateRule] = Field(default_factory=list)
    lineage: Lineage
    findings: list[Finding] = Field(default_factory=list)
    drift: DriftSummary | None = None
    label_issues: LabelIssuesSummary | None = None  # None: label_check was off
    promotions: list[Promotion] = Field(default_factory=list)
    promotions_as_of: str = "when the version was committed"
