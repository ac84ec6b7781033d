"""evaluate: calibration, test-set metrics, the error report, model.onnx and the gate."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.errors import StepFailed, one_line
from services.jobs.steps.data import PreparedData
from services.jobs.steps.labels import given_out_of_fold
from services.jobs.steps.train import TrainedModel
from training.calibration import calibration_report, fit_split, softmax
from training.errors import error_report
from training.evaluate import GateResult, predict_logits, quality_gate
from training.export import OnnxExport, export_with_parity
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold
from training.metrics import classification_metrics
from training.shards import ShardImages

# ----------------------------------------------------------------- evaluation
PARITY_IMAGES = 512  # test images the ONNX parity check reads when the data is streamed


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]  # accuracy, precision, recall, f1, roc_auc, ece, per class, n...
    errors: dict[str, Any]  # the error report
    gate: GateResult
    onnx: OnnxExport | None = None  # model.onnx and its parity with PyTorch
    calibration: dict[str, Any] | None = None  # ECE before/after, the temperature, the bins
    package: bytes | None = None  # model.pt with its "temperature" (None: the trained one)

    def event_metrics(self) -> dict[str, float]:
        return {k: self.metrics[k] for k in ("accuracy", "precision", "recall", "f1")}


def with_temperature(package: bytes, temperature: float) -> bytes:
    """model.pt with its ``"temperature"`` key set (every predict path divides the logits
    by it: training.evaluate.predict_probs, model.onnx, the predict route)."""
    pkg = torch.load(io.BytesIO(package), map_location="cpu", weights_only=True)
    pkg["temperature"] = float(temperature)
    buf = io.BytesIO()
    torch.save(pkg, buf)
    return buf.getvalue()


def evaluate(
    trained: TrainedModel,
    data: PreparedData,
    hp: Hyperparameters,
    oof: OutOfFold | None = None,
) -> Evaluation:
    """Temperature scaling fitted on the validation split, or on a tune job's pooled
    out-of-fold predictions (``oof``, every train + val image once) when it has them
    (stored in model.pt), then the
    test-set metrics on the calibrated probabilities with the ECE before and after, the
    error report, model.onnx (which applies the temperature too) with its parity check on
    the test split (never fails the job: the report says why there is no model.onnx) and
    the quality gate."""
    test_x, test_y, paths = data.test_set()
    d, val = data.decoded, data.split.val
    try:
        model = trained.module()
        test_logits = predict_logits(model, test_x)
        pool = np.union1d(data.split.train, val)
        given, why_not = given_out_of_fold(oof, pool, len(d.classes))
        split = fit_split(
            lambda: (predict_logits(model, data.images_of(val)), d.labels[val]),
            None if given is None else given.probs,
            None if given is None else d.labels[pool],
            why_not,
        )
        calibration = calibration_report(split, test_logits, test_y)
        t = calibration["temperature"]
        probs = softmax(test_logits, t)
        metrics = classification_metrics(test_y, probs, d.classes)
        metrics["ece"] = calibration["ece_after"]
        metrics["ece_uncalibrated"] = calibration["ece_before"]
        metrics["temperature"] = t
        errors = error_report(test_y, probs, d.classes, paths)
        package = with_temperature(trained.package, t)
    except Exception as e:  # noqa: BLE001
        raise StepFailed("evaluation", one_line(e)) from e
    if not hp.export_onnx:
        return Evaluation(metrics, errors, quality_gate(metrics, hp), None, calibration, package)
    if isinstance(test_x, ShardImages):  # streamed: a bounded sample, not the whole split
        test_x = test_x[:PARITY_IMAGES]
    onnx = export_with_parity(model, hp.image_size, test_x, temperature=t)
    gate = quality_gate(metrics, hp, onnx.report)
    return Evaluation(metrics, errors, gate, onnx, calibration, package)
