"""Calibration: expected calibration error and temperature scaling (Guo et al., ICML 2017).

A classifier is calibrated when, of the images it labels with confidence 0.8, about 80 %
are right. ``expected_calibration_error`` measures the gap with equal-width confidence bins
(15, as Guo et al.): the share-weighted mean of |accuracy - mean confidence| over the bins
of the top-1 confidence. Temperature scaling divides the logits by one scalar T > 0 fitted
on the validation split by minimising the negative log-likelihood (torch's LBFGS on log T,
so T stays positive); argmax, hence accuracy, does not change. T > 1 softens an
over-confident model, T < 1 sharpens an under-confident one. A split the model gets (almost)
all right cannot identify T: then T = 1 is kept, and the report says why (``fit``). A tune
job fits T on its k fold models' pooled out-of-fold predictions instead (``fit_split``):
every train + val image once, where the validation split is a few of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    p: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return p


def _bins(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The bins' edges and each confidence's bin: bin b holds (edges[b], edges[b+1]]; a
    confidence of exactly 0 cannot occur (>= 1/K)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> list[dict[str, Any]]:
    """Per equal-width bin of the top-1 confidence: its edges, image count, mean confidence
    and accuracy (None for an empty bin)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    right = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    edges, which = _bins(conf, n_bins)
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


MIN_ERRORS = 3  # validation errors below which the NLL cannot identify T: T = 1 is kept
LOG_T_PRIOR_SD = 1.0  # the MAP fit's prior: log T ~ N(0, 1), T within e^+-2 at 2 sd
T_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class TemperatureFit:
    """The temperature to serve with, and why: ``fitted`` False when T = 1 was kept because
    the validation split could not identify it (``reason`` says why)."""

    temperature: float
    fitted: bool
    reason: str | None = None


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature of ``fit``: 1.0 where the validation split cannot identify it."""
    return fit(logits, labels, max_iter).temperature


def fit(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> TemperatureFit:
    """Temperature scaling that never hurts: T = 1 unless the validation split identifies
    T, else the MAP estimate of T under a log-normal prior around 1 (mean NLL plus
    (log T)^2 / (2 sd^2 n)), by torch.optim.LBFGS on log T within ``T_BOUNDS``.

    A split with (almost) no errors does not identify T: when every top-1 label is right,
    sharpening always lowers the NLL, so the plain fit runs to T -> 0 and every prediction,
    the wrong ones of the test split too, comes out near 1.0 (T = 0.054 on the demo's digits
    made the test NLL 0.066 -> 0.437). So fewer than ``MIN_ERRORS`` errors keep T = 1, and
    so does a fit that ends at a bound."""
    n = len(labels)
    if n == 0:
        return TemperatureFit(1.0, False, "no validation images")
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    errors = int((z.argmax(dim=1) != y).sum())
    if errors < MIN_ERRORS:
        return TemperatureFit(
            1.0,
            False,
            f"the validation split has {errors} error(s) in {n} images, too few to fit a "
            f"temperature (at least {MIN_ERRORS}): T = 1 kept",
        )
    low, high = (float(np.log(b)) for b in T_BOUNDS)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        clamped = log_t.clamp(low, high)
        prior = clamped.pow(2).sum() / (2 * LOG_T_PRIOR_SD**2 * n)
        loss = F.cross_entropy(z / clamped.exp(), y) + prior
        loss.backward()
        return loss

    opt.step(closure)
    value = float(log_t.detach())
    if not np.isfinite(value) or value <= low + 1e-6 or value >= high - 1e-6:
        return TemperatureFit(1.0, False, f"the fit ran to a bound of T {T_BOUNDS}: T = 1 kept")
    return TemperatureFit(float(np.exp(value)), True)


def ece_interval(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS, n_boot: int = 1000, seed: int = 0
) -> list[float]:
    """The 5th and 95th percentiles of the ECE over ``n_boot`` bootstrap resamples of the
    images (seeded): how much the figure moves with the sample (90 test images: widely).
    Resampling adds noise that the ECE reads as miscalibration, so the figure itself can
    sit at or below the interval's low end; the width is what the interval tells."""
    n = len(labels)
    if n == 0:
        return [0.0, 0.0]
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == labels).astype(np.float64)
    _edges, which = _bins(conf, n_bins)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    # per resample and bin: the sums of correctness and of confidence; ECE is
    # sum_b |sum right - sum conf| / n (the share-weighted |accuracy - confidence|)
    slot = (which[draws] + n_bins * np.arange(n_boot)[:, None]).ravel()
    size = n_boot * n_bins
    sums_right = np.bincount(slot, weights=right[draws].ravel(), minlength=size)
    sums_conf = np.bincount(slot, weights=conf[draws].ravel(), minlength=size)
    eces = np.abs(sums_right - sums_conf).reshape(n_boot, n_bins).sum(axis=1) / n
    return [float(np.percentile(eces, 5)), float(np.percentile(eces, 95))]


@dataclass(frozen=True)
class FitSplit:
    """The logits and labels the temperature is fitted on: ``name`` ``validation`` (the
    final model's validation split) or ``out_of_fold`` (a tune job's k fold models, each
    train + val image scored once by the fold model that held it out), ``why`` it was
    chosen, ``images`` in words for the report."""

    logits: np.ndarray
    labels: np.ndarray
    name: str
    why: str

    @classmethod
    def validation(
        cls, logits: np.ndarray, labels: np.ndarray, why: str = "the validation split"
    ) -> FitSplit:
        """The final model's validation split."""
        return cls(np.asarray(logits), np.asarray(labels), "validation", why)

    def images(self) -> str:
        what = "out-of-fold train + val" if self.name == "out_of_fold" else "validation"
        return f"{len(self.labels)} {what} images"


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Logits for probabilities: log p is the logit minus a per-row constant (log-sum-exp),
    to which softmax, hence temperature scaling, is invariant; a probability float32
    rounded to 0 is floored at its smallest normal number (log ~ -87)."""
    p = np.asarray(probs, dtype=np.float64)
    tiny = float(np.finfo(np.float32).tiny)
    out: np.ndarray = np.log(np.maximum(p, tiny))
    return out


def fit_split(
    validation: Callable[[], tuple[np.ndarray, np.ndarray]],
    pooled_probs: np.ndarray | None = None,
    pooled_labels: np.ndarray | None = None,
    why_not_pooled: str | None = None,
) -> FitSplit:
    """The pooled out-of-fold predictions when given (every train + val image once, from
    the fold model that never trained on it: several times the validation split's images
    and errors, so T is identified where the small split cannot identify it), else the
    final model's validation split (``validation()`` makes its logits and labels), saying
    why (``why_not_pooled``: why a tune job has no pooled ones; None for a train job)."""
    if pooled_probs is not None and pooled_labels is not None:
        return FitSplit(
            logits_of(pooled_probs),
            np.asarray(pooled_labels),
            "out_of_fold",
            "a tune job: the best config's k fold models score every train + val image "
            "once, out of fold (more images and errors than the validation split alone)",
        )
    logits, labels = validation()
    why = "a train job: the final model's held-out validation split"
    if why_not_pooled:
        why = f"the final model's validation split (no pooled out-of-fold ones: {why_not_pooled})"
    return FitSplit.validation(logits, labels, why)


def calibration_report(
    split: FitSplit,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Temperature fitted on ``split`` (``fit_split``, or ``FitSplit.validation``); ECE
    and NLL on the test split before and after, and the bins of both reliability diagrams
    (metrics.json's ``calibration``; ``fit_split`` and ``fit_split_why`` say which images
    the fit used and why)."""
    fitted = fit(split.logits, split.labels)
    t = fitted.temperature
    before, after = softmax(test_logits), softmax(test_logits, t)
    return {
        "method": f"temperature scaling (Guo et al. 2017), T fitted on {split.images()} "
        f"(MAP, log T ~ N(0, {LOG_T_PRIOR_SD:g}); T = 1 where they cannot identify it)",
        "temperature": t,
        "fitted": fitted.fitted,
        "kept_because": fitted.reason,
        "fit_split": split.name,
        "fit_split_why": split.why,
        "fitted_on": split.images(),
        "n_bins": n_bins,
        "validation_images": int(len(split.labels)),
        "test_images": int(len(test_labels)),
        "ece_before": expected_calibration_error(before, test_labels, n_bins),
        "ece_after": expected_calibration_error(after, test_labels, n_bins),
        "ece_before_interval": ece_interval(before, test_labels, n_bins),
        "ece_after_interval": ece_interval(after, test_labels, n_bins),
        "nll_before": nll(test_logits, test_labels),
        "nll_after": nll(test_logits, test_labels, t),
        "bins_before": reliability_bins(before, test_labels, n_bins),
        "bins_after": reliability_bins(after, test_labels, n_bins),
    }
