"""The error report of a model version: which 30-50 examples to relabel or add next.

The most-confused class pairs from the confusion matrix, and the test images the model
gets wrong with the highest confidence (a wrong label, an ambiguous image, or a gap in the
data), as errors.json and a PNG grid of the worst of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import confusion_matrix

if TYPE_CHECKING:
    from training.shards import ShardImages


def error_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    paths: Sequence[str],
    top_k: int = 50,
    top_pairs: int = 10,
) -> dict[str, Any]:
    y_true = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    k = len(classes)
    cm = confusion_matrix(y_true, pred, labels=np.arange(k))
    off = [(int(cm[a, b]), a, b) for a in range(k) for b in range(k) if a != b and cm[a, b]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    wrong = np.nonzero(pred != y_true)[0]
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:top_k]
    return {
        "test_images": int(len(y_true)),
        "errors": int(len(wrong)),
        "confused_pairs": [
            {
                "true": classes[a],
                "predicted": classes[b],
                "count": n,
                "share_of_true": n / max(int(cm[a].sum()), 1),
            }
            for n, a, b in off[:top_pairs]
        ],
        "worst": [
            {
                "index": int(i),
                "path": paths[i],
                "true": classes[y_true[i]],
                "predicted": classes[pred[i]],
                "confidence": float(conf[i]),
                "true_class_probability": float(probs[i, y_true[i]]),
            }
            for i in worst
        ],
    }


def worst_examples_png(
    report: dict[str, Any], images: np.ndarray | ShardImages, cols: int = 6, limit: int = 24
) -> bytes | None:
    """A grid of the worst examples (``images``: uint8 (N, 3, H, W) of the test split,
    indexed like the report): true -> predicted and the confidence under each."""
    from training.plots import image_grid_png  # pyplot on the Agg backend

    worst = report["worst"][:limit]
    return image_grid_png(
        [images[w["index"]] for w in worst],
        [f"{w['true']} -> {w['predicted']}\n{w['confidence']:.2f}" for w in worst],
        "test images wrong with the highest confidence",
        cols,
    )
