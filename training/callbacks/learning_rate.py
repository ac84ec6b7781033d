"""Callbacks on the learning rate: set it each epoch (LearningRateScheduler), log it
(LearningRateMonitor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.callbacks.base import Callback


class LearningRateScheduler(Callback):
    """Keras LearningRateScheduler: ``schedule(epoch_in_phase, lr) -> lr`` (a callable or
    an import path ``package.module:function``) sets the lr at the start of every epoch;
    pair it with ``schedule=none``."""

    def __init__(self, schedule: Callable[[int, float], float] | str):
        if isinstance(schedule, str):
            from training.losses import import_callable

            schedule = import_callable(schedule)
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int) -> None:
        opt = self.run.optimizer
        lr = float(self.schedule(self.run.epoch_in_phase - 1, opt.param_groups[0]["lr"]))
        for g in opt.param_groups:
            g["lr"] = lr


class LearningRateMonitor(Callback):
    """Lightning's LearningRateMonitor: the lr of every parameter group, each epoch or
    each optimizer step, added to the epoch's logs (``lr-group<i>``, ``lr-steps``)."""

    def __init__(self, logging_interval: str = "epoch"):
        if logging_interval not in ("epoch", "step"):
            raise ValueError("logging_interval must be 'epoch' or 'step'")
        self.logging_interval = logging_interval
        self.steps: list[float] = []
        self.history: list[list[float]] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.steps = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        if self.logging_interval == "step":
            self.steps.append(self.run.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        groups = [g["lr"] for g in self.run.optimizer.param_groups]
        self.history.append(groups)
        for i, lr in enumerate(groups):
            logs[f"lr-group{i}"] = lr
        if self.logging_interval == "step":
            logs["lr-steps"] = list(self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = state["history"]
