"""ModelCheckpoint: the best weights (and the epoch's) written into each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.callbacks.monitor import Mode, Monitor, Monitored


class ModelCheckpoint(Monitored):
    """Keep the best weights by ``monitor`` and write them into each reported checkpoint
    as ``best.pt`` (a model.pt package); with ``every_epoch`` also the epoch's own
    weights as ``epoch.pt``. (Every epoch's full training state is checkpointed anyway.)"""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "min",
        save_best_only: bool = True,
        every_epoch: bool = False,
        min_delta: float = 0.0,
    ):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.save_best_only, self.every_epoch = save_best_only, every_epoch
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.tracker.value(logs)
        if value is None:
            return
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch = value, epoch
            self.best_weights = {
                k: v.detach().cpu().clone() for k, v in self.run.eval_module.state_dict().items()
            }

    def on_checkpoint(self, directory: Path) -> None:
        if self.best_weights is not None:
            torch.save(
                {
                    **self.run.export(self.best_weights),
                    "epoch": self.best_epoch,
                    self.monitor: self.best,
                },
                directory / "best.pt",
            )
        if self.every_epoch or not self.save_best_only:
            torch.save({**self.run.export(), "epoch": self.run.epoch}, directory / "epoch.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_weights = state["best_weights"]
