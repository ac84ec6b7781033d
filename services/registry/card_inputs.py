"""What a version's model card and lineage are made of, read once and typed: the version's
row, its job, hyperparameters and tuning run, the alias moves that pointed at it (the
database), and its folder's documents (metrics.json, health.json, label_issues.json).

``version_lineage`` answers GET /models/{name}/versions/{v}/lineage; ``version_card``
gives the ModelCard that services/registry/model_card.py renders, for the job driver
(which writes model_card.md with the version) and for the version's page. ``card_of``
is its pure part: documents in, card out. No torch here: the API imports it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.db import repo
from services.db.models import ModelVersion, TrainingJob
from services.registry.card_types import (
    Ancestor,
    CalibrationSummary,
    ClassFigures,
    DriftSummary,
    Finding,
    GateRule,
    LabelIssue,
    LabelIssuesSummary,
    Lineage,
    ModelCard,
    Promotion,
    StartingWeights,
    TestMetrics,
    TuningSummary,
)
from services.store.artifacts import HEALTH_FILE, LABEL_ISSUES_FILE, METRICS_FILE
from training.hyperparams import Hyperparameters, is_weights_name

# the version folder's documents a card reads
CARD_DOCUMENTS = (METRICS_FILE, HEALTH_FILE, LABEL_ISSUES_FILE)
# a version's model.pt in the store: .../models/<name>/v<N>/model.pt (artifacts.py)
_VERSION_MODEL = re.compile(r"(?:^|/)models/([\w.\-]+)/v(\d+)/model\.pt$")
_UNSET = object()


def changed_hyperparameters(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values that differ from Hyperparameters' defaults, and those defaults (None for
    a name the current defaults do not know: a value of an older release)."""
    defaults = Hyperparameters.model_validate({}).effective()
    changed = {k: v for k, v in values.items() if defaults.get(k, _UNSET) != v}
    return changed, {k: defaults.get(k) for k in changed}


def starting_weights(s: Session, weights: str | None) -> StartingWeights:
    """What ``weights`` names: nothing, torchvision's weights by name, a version of this
    registry (exactly its model.pt's URI, as the version row records it), or a file."""
    if not weights:
        return StartingWeights(kind="none")
    if is_weights_name(weights):
        return StartingWeights(kind="pretrained", weights=weights)
    m = _VERSION_MODEL.search(weights)
    parent = repo.get_version(s, m[1], int(m[2])) if m else None
    if parent is not None and parent.model_path == weights:
        return StartingWeights(
            kind="model_version", weights=weights, model_name=parent.model_name,
            version=parent.version,
        )  # fmt: skip
    return StartingWeights(kind="file", weights=weights)


MAX_ANCESTORS = 10


def ancestors(s: Session, start: StartingWeights) -> list[Ancestor]:
    """The versions training started from, nearest first: the parent, the version the
    parent started from, ... (at most MAX_ANCESTORS; a cycle ends the walk)."""
    out: list[Ancestor] = []
    seen: set[tuple[str, int]] = set()
    while start.model_name is not None and start.version is not None:
        key = (start.model_name, start.version)
        mv = repo.get_version(s, *key) if key not in seen else None
        if mv is None or len(out) == MAX_ANCESTORS:
            break
        seen.add(key)
        job = repo.get_job(s, mv.job_id)
        start = starting_weights(s, repo.hyperparameters(s, mv.job_id).get("weights"))
        out.append(
            Ancestor(
                model_name=mv.model_name,
                version=mv.version,
                job_id=mv.job_id,
                dataset_uri=job.dataset_uri if job else None,
                dataset_fingerprint=mv.dataset_fingerprint,
                starting_weights=start,
            )
        )
    return out


def tuning_summary(s: Session, job: TrainingJob) -> TuningSummary | None:
    """A ``mode: tune`` job's search (its latest run), or None."""
    run = repo.latest_tuning_run(s, job.id) if job.mode == "tune" else None
    if run is None:
        return None
    return TuningSummary(
        run_id=run.id,
        status=run.status,
        k_folds=run.k_folds,
        metric=run.metric,
        mode=run.mode,
        scheduler=run.scheduler,
        num_samples=run.num_samples,
        trials=len(repo.tuning_trials(s, run.id)),
        best_config=run.best_config,
    )


def version_lineage(s: Session, mv: ModelVersion) -> Lineage:
    """Trained on what (the data set's location and fingerprint), from what (the starting
    weights), how (every hyperparameter, the changed ones, the search), by which job."""
    job = repo.get_job(s, mv.job_id)
    values = repo.hyperparameters(s, mv.job_id)
    changed, defaults = changed_hyperparameters(values)
    start = starting_weights(s, values.get("weights"))
    return Lineage(
        model_name=mv.model_name,
        version=mv.version,
        job_id=mv.job_id,
        batch_id=job.batch_id if job else None,
        mode=job.mode if job else "train",
        dataset_uri=job.dataset_uri if job else None,
        dataset_fingerprint=mv.dataset_fingerprint,
        starting_weights=start,
        hyperparameters=values,
        changed_hyperparameters=changed,
        defaults=defaults,
        tuning=tuning_summary(s, job) if job else None,
        ancestors=ancestors(s, start),
    )


def version_promotions(s: Session, mv: ModelVersion) -> list[Promotion]:
    """Every alias move to this version, oldest first."""
    return [
        Promotion(
            alias=m.alias,
            from_version=m.from_version,
            by=m.moved_by,
            reason=m.reason,
            overrode_gate=m.overrode_gate,
            at=m.moved_at,
        )
        for m in repo.alias_moves_to(s, mv.model_name, mv.version)
    ]


def version_card(
    s: Session, mv: ModelVersion, documents: dict[str, dict[str, Any] | None], as_of: str
) -> ModelCard:
    """The card of ``mv``: its row, lineage and promotions from the database (in ``s``,
    so a driver's uncommitted gate promotion counts), the rest from ``documents``
    (metrics.json, health.json, label_issues.json by name; None: absent)."""
    return card_of(mv, version_lineage(s, mv), documents, version_promotions(s, mv), as_of=as_of)


def card_of(
    mv: Any,
    lineage: Lineage,
    documents: dict[str, dict[str, Any] | None],
    promotions: list[Promotion],
    *,
    as_of: str,
) -> ModelCard:
    """A ModelCard from the version's row (``mv``: model_name, version, status,
    trained_at, the metrics, gate), its lineage, promotions and folder's documents. A
    document that is absent or of another shape leaves its sections empty, never fails."""
    metrics = documents.get(METRICS_FILE) or {}
    health = documents.get(HEALTH_FILE) or {}
    test = metrics.get("test") or {}
    return ModelCard(
        model_name=mv.model_name,
        version=mv.version,
        status=mv.status,
        trained_at=mv.trained_at,
        classes=_classes(test, health),
        split=metrics.get("split") or {},
        images=health.get("images"),
        skipped_images=len(metrics.get("skipped_images") or []),
        test=TestMetrics(**{**_row_metrics(mv), **_known(test, TestMetrics)}),
        confusion=test.get("confusion_matrix") or [],
        calibration=_parsed(CalibrationSummary, metrics.get("calibration")),
        gate=[GateRule(**r) for r in (mv.gate or {}).get("rules", [])],
        lineage=lineage,
        findings=_each(Finding, health.get("findings")),
        drift=_drift(health.get("drift")),
        label_issues=_label_issues(documents.get(LABEL_ISSUES_FILE)),
        promotions=promotions,
        promotions_as_of=as_of,
    )


def _row_metrics(mv: Any) -> dict[str, Any]:
    return {k: getattr(mv, k, None) for k in ("accuracy", "precision", "recall", "f1", "roc_auc")}


def _known(doc: dict[str, Any], model: Any) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k in model.model_fields and v is not None}


def _parsed(model: Any, doc: Any) -> Any:
    """``model`` from ``doc``, or None when it is absent or of another shape."""
    if not isinstance(doc, dict):
        return None
    try:
        return model.model_validate(doc)
    except ValidationError:
        return None


def _each(model: Any, docs: Any) -> list[Any]:
    """``model`` from each item of the list ``docs`` that has its shape."""
    parsed = (_parsed(model, d) for d in (docs if isinstance(docs, list) else []))
    return [p for p in parsed if p is not None]


def _classes(test: dict[str, Any], health: dict[str, Any]) -> list[ClassFigures]:
    per_class = test.get("per_class") or {}
    images = health.get("per_class") or {}
    names = test.get("classes") or list(per_class) or list(images)
    return [
        ClassFigures(name=c, images=images.get(c), **_known(per_class.get(c) or {}, ClassFigures))
        for c in names
    ]


def _drift(doc: Any) -> DriftSummary | None:
    if not isinstance(doc, dict):
        return None
    chi = doc.get("chi_square") or {}
    drift: DriftSummary | None = _parsed(DriftSummary, {**doc, "chi_square_p": chi.get("p_value")})
    return drift


def _label_issues(doc: Any) -> LabelIssuesSummary | None:
    if not isinstance(doc, dict):
        return None
    top = _each(LabelIssue, doc.get("issues"))
    summary = _parsed(LabelIssuesSummary, {k: v for k, v in doc.items() if k != "top"})
    return None if summary is None else summary.model_copy(update={"top": top})
