"""The search's outcome per config: mean and std across folds, a ranking, the best config.

Each trial's history holds one report per epoch (what tuning.search's trials send): the
mean and std over folds of val_loss and val_accuracy, and every fold's own figures. Per
config this gives the figures at the last reported epoch (the estimate of what the final
training will produce: a fold that finished stands at its final model, restored best
weights included) and at its best epoch (by the search metric).

Ranking: configs that ran their whole schedule first, then the ones ASHA stopped early
(stopped because they trailed at a rung), then failed ones; within each group by the mean
of the metric at the last reported epoch, ties by the smaller std, then by grid order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class TrialStatus(StrEnum):
    """How a trial ended (tuning_trials.status, re-exported by services/statuses.py)."""

    COMPLETED = "completed"
    STOPPED_EARLY = "stopped_early"  # ASHA stopped it at a rung
    FAILED = "failed"


STATUS_ORDER: dict[str, int] = {
    TrialStatus.COMPLETED: 0,
    TrialStatus.STOPPED_EARLY: 1,
    TrialStatus.FAILED: 2,
}
MODES = {"val_loss": "min", "val_accuracy": "max"}


def _num(x: Any) -> float | None:
    """A finite float, or None (NaN and inf are no estimate)."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _figures(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "epoch": int(row["epoch"]),
        "val_loss": _num(row.get("val_loss")),
        "val_loss_std": _num(row.get("val_loss_std")),
        "val_accuracy": _num(row.get("val_accuracy")),
        "val_accuracy_std": _num(row.get("val_accuracy_std")),
    }


@dataclass
class ConfigSummary:
    """One config's outcome: figures at its last reported epoch and at its best epoch."""

    index: int
    trial_id: str
    config: dict[str, Any]
    status: str
    stopped_at: int
    max_epochs: int | None
    last: dict[str, Any] | None
    best: dict[str, Any] | None
    error: str | None = None
    rank: int | None = None
    metric: str = "val_loss"  # what ``best`` is best by

    def mean(self, metric: str, at: str = "last") -> float | None:
        row = self.last if at == "last" else self.best
        return None if row is None else row.get(metric)

    def std(self, metric: str, at: str = "last") -> float | None:
        row = self.last if at == "last" else self.best
        return None if row is None else row.get(f"{metric}_std")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(trial: Any, metric: str = "val_loss") -> ConfigSummary:
    """A ConfigSummary of a TrialOutcome (or of a dict with the same fields)."""
    get: Callable[..., Any] = (
        trial.get if isinstance(trial, Mapping) else lambda k, d=None: getattr(trial, k, d)
    )
    history = list(get("history") or [])
    sign = 1.0 if MODES[metric] == "min" else -1.0
    last = _figures(history[-1]) if history else None
    scored = [
        (sign * v, i) for i, h in enumerate(history) if (v := _num(h.get(metric))) is not None
    ]
    best = _figures(history[min(scored)[1]]) if scored else None
    stopped_at = int(history[-1]["epoch"]) if history else 0
    return ConfigSummary(
        int(get("index")),
        str(get("trial_id")),
        dict(get("config") or {}),
        str(get("status")),
        stopped_at,
        get("max_epochs"),
        last,
        best,
        get("error"),
        metric=metric,
    )


def sort_key(c: ConfigSummary, metric: str) -> tuple[int, bool, float, float, int]:
    sign = 1.0 if MODES[metric] == "min" else -1.0
    mean, std = c.mean(metric), c.std(metric)
    return (
        STATUS_ORDER.get(c.status, 3),
        mean is None,  # no finite estimate: last in its group
        round(sign * mean, 12) if mean is not None else 0.0,
        std if std is not None else math.inf,
        c.index,
    )


def rank(trials: Iterable[Any], metric: str = "val_loss") -> list[ConfigSummary]:
    """Summaries in ranking order, ``rank`` set 1..n."""
    if metric not in MODES:
        raise ValueError(f"metric must be one of {', '.join(MODES)}")
    ranked = sorted(
        (t if isinstance(t, ConfigSummary) else summarize(t, metric) for t in trials),
        key=lambda c: sort_key(c, metric),
    )
    for i, c in enumerate(ranked, 1):
        c.rank = i
    return ranked


def best(ranked: list[ConfigSummary], metric: str = "val_loss") -> ConfigSummary | None:
    """The winner: the first ranked config that did not fail and has an estimate."""
    for c in ranked:
        if c.status != TrialStatus.FAILED and c.mean(metric) is not None:
            return c
    return None


def config_text(config: Mapping[str, Any]) -> str:
    if not config:
        return "(the base config)"
    return " ".join(f"{k}={_value_text(v)}" for k, v in config.items())


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace(" ", "")


def _num_text(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.4g}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{_num_text(mean)} ± {_num_text(std)}" if std is not None else _num_text(mean)


def estimate_text(c: ConfigSummary, metric: str, at: str = "last") -> str:
    """``mean ± std`` of ``metric`` over folds, ``-`` where there is none."""
    return _pm(c.mean(metric, at), c.std(metric, at))


def trial_line(trial: Any, metric: str = "val_loss", total: int | None = None) -> str:
    """One line for a trial that just ended (progress output)."""
    c = trial if isinstance(trial, ConfigSummary) else summarize(trial, metric)
    n = f"{c.index + 1}/{total}" if total else f"{c.index + 1}"
    of = f"/{c.max_epochs}" if c.max_epochs else ""
    text = (
        f"trial {n} {c.status} at epoch {c.stopped_at}{of}: "
        f"val_loss {_pm(c.mean('val_loss'), c.std('val_loss'))}, "
        f"val_accuracy {_pm(c.mean('val_accuracy'), c.std('val_accuracy'))}  "
        f"{config_text(c.config)}"
    )
    if c.error:
        text += f"  ({c.error})"
    return text


def table(ranked: list[ConfigSummary], metric: str = "val_loss") -> str:
    """The ranked configs as a printable table (mean ± std over folds)."""
    head = (
        f"{'rank':>4}  {'status':<13} {'epochs':>6}  {'val_loss':<19} "
        f"{'val_accuracy':<17} {'best epoch (' + metric + ')':<26} config"
    )
    lines = [head, "-" * len(head)]
    for c in ranked:
        of = f"{c.stopped_at}/{c.max_epochs}" if c.max_epochs else str(c.stopped_at)
        b = "-"
        if c.best is not None:
            b = f"{c.best['epoch']}: {_pm(c.mean(metric, 'best'), c.std(metric, 'best'))}"
        lines.append(
            f"{c.rank:>4}  {c.status:<13} {of:>6}  "
            f"{_pm(c.mean('val_loss'), c.std('val_loss')):<19} "
            f"{_pm(c.mean('val_accuracy'), c.std('val_accuracy')):<17} "
            f"{b:<26} {config_text(c.config)}" + (f"  ({c.error})" if c.error else "")
        )
    return "\n".join(lines)
