"""version_files: what models/<name>/v<N>/ will hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.intake.spec import JobSpec
from services.jobs.steps.data import PreparedData
from services.jobs.steps.evaluate import Evaluation
from services.jobs.steps.labels import LabelCheck
from services.jobs.steps.train import TrainedModel
from services.store.artifacts import (
    CONFUSION_PNG,
    CURVES_PNG,
    DATA_PROFILE_FILE,
    ERRORS_FILE,
    ERRORS_PNG,
    HEALTH_FILE,
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
    METRICS_FILE,
    MODEL_FILE,
    ONNX_FILE,
    PREFLIGHT_FILE,
    RELIABILITY_FILE,
    TUNING_FILE,
)
from training import drift
from training.errors import worst_examples_png
from training.hyperparams import Hyperparameters
from training.plots import confusion_matrix_png, curves_png, reliability_png


@dataclass(frozen=True)
class JobResults:
    """What a job's steps made, as the version folder records it."""

    trained: TrainedModel
    evaluation: Evaluation
    history: list[dict[str, Any]]  # the epoch rows
    preflight: dict[str, Any] | None = None  # the preflight's report
    tuning: dict[str, Any] | None = None  # tuning.json, for a tune job
    labels: LabelCheck | None = None


def version_files(
    spec: JobSpec, job_id: int, data: PreparedData, results: JobResults
) -> dict[str, bytes]:
    """The files of the version folder (services/store/artifacts.py names them)."""
    trained, evaluation, history = results.trained, results.evaluation, results.history
    preflight, tuning, labels = results.preflight, results.tuning, results.labels
    hp, model_name, m = spec.hyperparameters, spec.model_name, evaluation.metrics
    files = {
        MODEL_FILE: evaluation.package or trained.package,
        METRICS_FILE: _json(_metrics(hp, data, trained, evaluation, history)),
        CURVES_PNG: curves_png(history, f"job {job_id}: {model_name}"),
        CONFUSION_PNG: confusion_matrix_png(
            m["confusion_matrix"], data.decoded.classes, f"{model_name}: test split"
        ),
        HEALTH_FILE: _json(data.health),
        ERRORS_FILE: _json(evaluation.errors),
    }
    if evaluation.calibration is not None:
        files[RELIABILITY_FILE] = reliability_png(
            evaluation.calibration, f"{model_name}: test split, 15 bins"
        )
    if evaluation.onnx is not None and evaluation.onnx.model is not None:
        files[ONNX_FILE] = evaluation.onnx.model
    worst = worst_examples_png(evaluation.errors, data.test_set()[0])
    if worst is not None:
        files[ERRORS_PNG] = worst
    if preflight is not None:
        files[PREFLIGHT_FILE] = _json(preflight)
    if tuning is not None:
        files[TUNING_FILE] = _json(tuning)
    d, test = data.decoded, data.split.test
    files[DATA_PROFILE_FILE] = _json(
        drift.data_profile(
            d.classes, d.labels, test, d.paths, d.sha1, drift.image_hashes(data.images_of(test))
        )
    )
    if labels is not None:
        files[LABEL_ISSUES_FILE] = _json(labels.report)
        if labels.png is not None:
            files[LABEL_ISSUES_PNG] = labels.png
    return files


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


def _metrics(
    hp: Hyperparameters,
    data: PreparedData,
    trained: TrainedModel,
    evaluation: Evaluation,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """metrics.json: the test metrics, the gate, how it trained, the split, what was
    skipped, every effective hyperparameter, the epochs, ONNX parity and calibration."""
    return {
        "test": evaluation.metrics,
        "gate": evaluation.gate.to_dict(),
        "training": trained.summary,
        "training_time_s": trained.training_time_s,
        "split": data.split.sizes(),
        "skipped_images": [{"path": p, "reason": r} for p, r in data.decoded.bad],
        "hyperparameters": hp.effective(),
        "history": history,
        "onnx": evaluation.onnx.report if evaluation.onnx else None,
        "calibration": evaluation.calibration,
    }
