"""Calibration: expected calibration error and temperature scaling (Guo et al., ICML 2017).

A classifier is calibrated when, of the images it labels with confidence 0.8, about 80 %
are right. ``expected_calibration_error`` measures the gap with equal-width confidence bins
(15, as Guo et al.): the share-weighted mean of |accuracy - mean confidence| over the bins
of the top-1 confidence. Temperature scaling divides the logits by one scalar T > 0 fitted
on the validation split by minimising the negative log-likelihood (torch's LBFGS on log T,
so T stays positive); argmax, hence accuracy, does not change. T > 1 softens an
over-confident model, T < 1 sharpens an under-confident one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

N_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature), row-wise, float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-width bin of the top-1 confidence: its edges, image count, mean confidence
    and accuracy (None for an empty bin)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    right = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 cannot occur (>= 1/K)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        out.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": n,
                "confidence": float(conf[inside].mean()) if n else None,
                "accuracy": float(right[inside].mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence| (0 is perfect)."""
    n = len(labels)
    if n == 0:
        return 0.0
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(probs, labels, n_bins)
            if b["count"]
        )
    )


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / temperature)."""
    if len(labels) == 0:
        return 0.0
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return float(F.cross_entropy(z, torch.as_tensor(np.asarray(labels), dtype=torch.long)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (logits, labels), by
    torch.optim.LBFGS on log T (strong-Wolfe line search), starting from T = 1. With no
    images, 1.0."""
    if len(labels) == 0:
        return 1.0
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t) or t <= 0:
        return 1.0
    # a split the model gets entirely right drives T towards 0 (ever more confident): keep
    # T in a range that still means something
    return float(np.clip(t, 1e-2, 1e2))


def calibration_report(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Temperature fitted on validation; ECE and NLL on the test split before and after,
    and the bins of both reliability diagrams (metrics.json's ``calibration``)."""
    t = fit_temperature(val_logits, val_labels)
    before, after = softmax(test_logits), softmax(test_logits, t)
    return {
        "method": "temperature scaling (Guo et al. 2017), T fitted on the validation split",
        "temperature": t,
        "n_bins": n_bins,
        "validation_images": int(len(val_labels)),
        "test_images": int(len(test_labels)),
        "ece_before": expected_calibration_error(before, test_labels, n_bins),
        "ece_after": expected_calibration_error(after, test_labels, n_bins),
        "nll_before": nll(test_logits, test_labels),
        "nll_after": nll(test_logits, test_labels, t),
        "bins_before": reliability_bins(before, test_labels, n_bins),
        "bins_after": reliability_bins(after, test_labels, n_bins),
    }
