"""Keras-style callbacks for the training loop.

Each callback is a small class with hooks named for the moment they run and a
``state_dict`` / ``load_state_dict`` so a resumed run restores it. Callbacks see the run
(``self.run``: model, optimizer, history) and talk back only through ``run.stop_training``
(and ``run.failure``); the run reduces the stop flag across ranks, so no worker stops
alone.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from training.loop import TwoPhaseRun


class Callback:
    run: "TwoPhaseRun"

    def set_run(self, run: "TwoPhaseRun") -> None:
        self.run = run

    def on_phase_begin(self, phase: int) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_phase_end(self, phase: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CallbackList:
    def __init__(self, callbacks: list[Callback], run: "TwoPhaseRun"):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_run(run)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for c in self.callbacks:
                getattr(c, hook)(*args)
        return call

    def state_dict(self) -> list[dict[str, Any]]:
        return [c.state_dict() for c in self.callbacks]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for c, s in zip(self.callbacks, states, strict=True):
            c.load_state_dict(s)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights`` the best epoch's weights are put back when the
    phase ends (Keras EarlyStopping)."""

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5,
                 min_delta: float = 0.0, restore_best_weights: bool = True):
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best_weights = abs(min_delta), restore_best_weights
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = logs.get(self.monitor)
        if value is None or math.isnan(value):
            return
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: v.detach().cpu().clone()
                                     for k, v in self.run.eval_module.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.run.stop_training = True

    def on_phase_end(self, phase: int) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.run.eval_module.load_state_dict(self.best_weights)
            self.run.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best_weights = state["best_weights"]


class TerminateOnNaN(Callback):
    """Stop, and mark the run failed, when the training loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.run.stop_training = True
            self.run.failure = f"loss became {loss} at epoch {epoch}"


class ProgressLogger(Callback):
    """One line per epoch on rank 0: phase, epoch, loss, accuracy, val figures, lr, time."""

    def __init__(self, stream=None):
        self.stream = stream

    def on_phase_begin(self, phase: int) -> None:
        if self.run.rank == 0:
            info = self.run.phase_info
            self._print(f"phase {phase}: {info['unfrozen_layers']} of {info['backbone_layers']}"
                        f" backbone layers trainable, {info['trainable_params']:,} parameters,"
                        f" lr {self.run.optimizer.param_groups[0]['lr']:.2g}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.run.rank == 0:
            self._print(f"epoch {epoch:3d} (phase {logs['phase']}) loss {logs['loss']:.4f}"
                        f" acc {logs['accuracy']:.4f} val_loss {logs['val_loss']:.4f}"
                        f" val_acc {logs['val_accuracy']:.4f} lr {logs['lr']:.2g}"
                        f" {logs['epoch_time_s']:.1f}s")

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)
