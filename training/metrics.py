"""Classification metrics from labels and predicted probabilities (scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, ROC AUC (one-vs-rest, macro), per-class
    figures and the confusion matrix (rows: true class, columns: predicted)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    labels = np.arange(len(classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "f1": float(f.mean()),
        "roc_auc": _roc_auc(y_true, probs, labels),
        "n": int(len(y_true)),
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    return out


def _roc_auc(y_true: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < len(labels):
        return None  # undefined when a class is absent from the test split
    probs = probs / probs.sum(axis=1, keepdims=True)
    if len(labels) == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels))
