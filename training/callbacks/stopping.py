"""Callbacks that stop a run: EarlyStopping (patience, best weights) and TerminateOnNaN."""

from __future__ import annotations

import math
from typing import Any

import torch

from training.callbacks.base import Callback
from training.callbacks.monitor import Mode, Monitor, Monitored


class EarlyStopping(Monitored):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights`` the best epoch's weights are put back when the
    phase ends (Keras EarlyStopping). ``should_stop`` is the decision alone."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def should_stop(self, value: float) -> tuple[bool, str | None]:
        """Take one epoch's value: (stop?, why). It keeps the best value and the count of
        epochs without improvement, and touches nothing of the run."""
        if self.tracker.improved(value):
            self.tracker.best, self.wait = value, 0
            return False, None
        self.wait += 1
        if self.wait >= self.patience:
            return True, (
                f"{self.monitor} did not improve by more than {self.min_delta:g} "
                f"for {self.wait} epoch(s); best {self.best:.6g}"
            )
        return False, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.tracker.value(logs)
        if value is None:
            return
        improved = self.tracker.improved(value)
        stop, reason = self.should_stop(value)
        if improved:
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = {
                    k: v.detach().cpu().clone()
                    for k, v in self.run.eval_module.state_dict().items()
                }
        if stop:
            self.stopped_epoch, self.stop_reason = epoch, reason
            self.run.stop_training = True

    def on_phase_end(self, phase: int) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.run.eval_module.load_state_dict(self.best_weights)
            self.run.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.stop_reason = state.get("stop_reason")
        self.best_weights = state["best_weights"]


class TerminateOnNaN(Callback):
    """Stop, and mark the run failed, when the training loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.run.stop_training = True
            self.run.failure = f"loss became {loss} at epoch {epoch}"
