"""Test-set evaluation and the quality gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from training.augment import eval_transform
from training.hyperparams import Hyperparameters
from training.metrics import classification_metrics


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, batch_size: int = 256,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Softmax probabilities for uint8 (N, 3, H, W) images."""
    model.eval().to(device)
    tf = eval_transform()
    out = []
    for s in range(0, len(images), batch_size):
        x = tf(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size]))).to(device)
        out.append(torch.softmax(model(x).float(), dim=1).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, classes: list[str],
             device: torch.device | str = "cpu") -> dict[str, Any]:
    return classification_metrics(labels, predict_probs(model, images, device=device), classes)


@dataclass(frozen=True)
class GateRule:
    metric: str
    threshold: float
    value: float
    passed: bool


@dataclass(frozen=True)
class GateResult:
    rules: list[GateRule]

    @property
    def approved(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def status(self) -> str:
        return "approved" if self.approved else "rejected"

    def passed(self) -> dict[str, bool]:
        return {r.metric: r.passed for r in self.rules}

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "rules": [asdict(r) for r in self.rules]}


def quality_gate(metrics: dict[str, Any], hp: Hyperparameters) -> GateResult:
    """Every rule is ``metric > threshold`` (strictly); all must pass to approve."""
    thresholds = {"accuracy": hp.gate_accuracy, "precision": hp.gate_precision,
                  "recall": hp.gate_recall}
    return GateResult([GateRule(m, t, float(metrics[m]), float(metrics[m]) > t)
                       for m, t in thresholds.items()])
