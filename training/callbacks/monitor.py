"""``Monitor``: the one "did the monitored figure improve" rule, and ``Monitored``, the
callback that watches one figure through it (EarlyStopping and ModelCheckpoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from training.callbacks.base import Callback

Mode = Literal["min", "max"]


def check_mode(mode: str) -> Mode:
    """``mode`` as a Literal["min", "max"], or ValueError naming what was given."""
    if mode not in get_args(Mode):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode  # type: ignore[return-value]


@dataclass
class Monitor:
    """The best value so far of one logged figure, and whether a new value beats it by
    more than ``min_delta`` (lower for ``min``, higher for ``max``; Keras and Lightning
    semantics). A missing or NaN value is no value: ``value(logs)`` gives None."""

    monitor: str = "val_loss"
    mode: Mode = "min"
    min_delta: float = 0.0
    best: float = field(init=False)

    def __post_init__(self) -> None:
        self.mode = check_mode(self.mode)
        self.min_delta = abs(self.min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def value(self, logs: dict[str, Any]) -> float | None:
        value = logs.get(self.monitor)
        return None if value is None or math.isnan(value) else float(value)

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class Monitored(Callback):
    """A callback that watches one figure through ``self.tracker`` (a Monitor): its
    settings and best value read through, and its state saved under its class, the
    figure and the mode (two such callbacks on different figures keep apart)."""

    tracker: Monitor

    @property
    def monitor(self) -> str:
        return self.tracker.monitor

    @property
    def mode(self) -> Mode:
        return self.tracker.mode

    @property
    def min_delta(self) -> float:
        return self.tracker.min_delta

    @property
    def best(self) -> float:
        return self.tracker.best

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.monitor},{self.mode}]"
