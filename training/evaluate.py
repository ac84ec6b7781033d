"""Test-set evaluation and the quality gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from training.augment import eval_transform
from training.export import TOLERANCE
from training.hyperparams import Hyperparameters
from training.verdicts import GateStatus

if TYPE_CHECKING:
    from training.shards import ShardImages


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | ShardImages,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Logits (float32, (N, classes)) for uint8 (N, 3, H, W) images."""
    model.eval().to(device)
    tf = eval_transform()
    out = []
    for s in range(0, len(images), batch_size):
        x = tf(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))).to(device)
        out.append(model(x).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def predict_probs(
    model: nn.Module,
    images: np.ndarray | ShardImages,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
) -> np.ndarray:
    """Softmax probabilities, softmax(logits / temperature), for uint8 (N, 3, H, W) images;
    ``temperature``: model.pt's ``"temperature"`` (training/calibration.py), 1.0 when absent."""
    logits = predict_logits(model, images, batch_size, device)
    if logits.size == 0:
        return logits
    return torch.softmax(torch.from_numpy(logits) / temperature, dim=1).numpy()


def evaluate(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    # imported here: sklearn costs each predict actor (which only needs predict_probs)
    # seconds of its start
    from training.metrics import classification_metrics

    return classification_metrics(labels, predict_probs(model, images, device=device), classes)


@dataclass(frozen=True)
class GateRule:
    metric: str
    threshold: float
    value: float
    passed: bool
    op: str = ">"  # the rule is ``value op threshold``: ">" or "<" (ECE: lower is better)


@dataclass(frozen=True)
class GateResult:
    rules: list[GateRule]

    @property
    def approved(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def status(self) -> GateStatus:
        return GateStatus.APPROVED if self.approved else GateStatus.REJECTED

    def passed(self) -> dict[str, bool]:
        return {r.metric: r.passed for r in self.rules}

    def to_dict(self) -> dict[str, Any]:
        """The verdict and every rule; ``op`` only on rules other than ``>`` (the rows
        stored before the ECE rule stay what they were)."""
        rules = [{k: v for k, v in asdict(r).items() if k != "op" or v != ">"} for r in self.rules]
        return {"status": self.status, "rules": rules}


def quality_gate(
    metrics: dict[str, Any], hp: Hyperparameters, onnx: dict[str, Any] | None = None
) -> GateResult:
    """Every metric rule is ``metric > threshold`` (strictly); all must pass to approve.

    With ``gate_ece`` one more rule, ``ece < gate_ece``: the test split's expected
    calibration error after temperature scaling (``metrics["ece"]``, training/calibration.py).

    With ``gate_onnx_parity`` one more rule, ``onnx_parity``: model.onnx's probabilities
    within ``tolerance`` of PyTorch's and every top-1 label the same (``onnx``: metrics.json's
    onnx section); its value is the max absolute difference, 1.0 (the most two
    probabilities can differ) when there was no model.onnx to compare."""
    thresholds = {
        "accuracy": hp.gate_accuracy,
        "precision": hp.gate_precision,
        "recall": hp.gate_recall,
    }
    rules = [
        GateRule(m, t, float(metrics[m]), float(metrics[m]) > t) for m, t in thresholds.items()
    ]
    if hp.gate_ece is not None:
        ece = metrics.get("ece")
        value = 1.0 if ece is None else float(ece)  # no calibration figure: the worst ECE
        rules.append(GateRule("ece", hp.gate_ece, value, value < hp.gate_ece, op="<"))
    if hp.gate_onnx_parity:
        onnx = onnx or {}
        diff = onnx.get("max_abs_diff")
        rules.append(
            GateRule(
                "onnx_parity",
                float(onnx.get("tolerance", TOLERANCE)),
                1.0 if diff is None else float(diff),
                bool(onnx.get("passed")),
            )
        )
    return GateResult(rules)
