"""Per-epoch learning-rate schedules built on ``torch.optim.lr_scheduler``.

Each phase gets its own schedule starting from its own lr. ``t`` counts epochs within the
phase. Formulas (DESIGN.md): step lr0·γ^⌊t/N⌋, exponential lr0·γ^t, cosine
lr_min + ½(lr0 − lr_min)(1 + cos(πt/T)), cyclical triangular between lr_min and lr0 with
half-cycle m. A linear warm-up, lr0·(t+1)/(w+1) for t < w, can precede any of them.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sch

from training.hyperparams import Hyperparameters


def _main_scheduler(
    optimizer: Optimizer, hp: Hyperparameters, epochs: int, lr0: float
) -> sch.LRScheduler:
    name = hp.schedule
    if name == "plateau":
        return sch.ReduceLROnPlateau(
            optimizer, mode="min", factor=hp.factor, patience=hp.plateau_patience
        )
    if name == "none":
        return sch.LambdaLR(optimizer, lambda _t: 1.0)
    if name == "step":
        return sch.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
    if name == "multistep":
        return sch.MultiStepLR(optimizer, milestones=hp.milestones, gamma=hp.gamma)
    if name == "exponential":
        return sch.ExponentialLR(optimizer, gamma=hp.gamma)
    if name == "cosine":
        return sch.CosineAnnealingLR(optimizer, T_max=hp.t_max or max(epochs, 1), eta_min=hp.lr_min)
    if name == "cyclical":
        return sch.CyclicLR(
            optimizer,
            base_lr=hp.lr_min,
            max_lr=lr0,
            step_size_up=hp.cycle_half,
            mode="triangular",
            cycle_momentum=False,
        )
    if name == "onecycle":
        return sch.OneCycleLR(
            optimizer, max_lr=lr0, total_steps=max(epochs, 2), cycle_momentum=False
        )
    raise ValueError(f"unknown schedule {name!r}")


class EpochSchedule:
    """Warm-up (optional) then the main schedule, stepped once per epoch.

    The main scheduler is created when warm-up ends, so it starts from lr0 whatever it is
    (CyclicLR and OneCycleLR set the lr when they are built).
    """

    def __init__(self, optimizer: Optimizer, hp: Hyperparameters, epochs: int, lr0: float):
        self.optimizer, self.hp, self.lr0 = optimizer, hp, lr0
        self.warmup = min(hp.warmup_epochs, epochs)
        self.main_epochs = max(epochs - self.warmup, 1)
        self.t = 0
        self.main: sch.LRScheduler | None = None
        if self.warmup:
            self._set_lr(lr0 / (self.warmup + 1))
        else:
            self.main = _main_scheduler(optimizer, hp, self.main_epochs, lr0)

    def _set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    @property
    def lr(self) -> float:
        lr: float = self.optimizer.param_groups[0]["lr"]
        return lr

    def step(self, val_loss: float | None = None) -> None:
        """Call after each epoch; ``val_loss`` feeds ReduceLROnPlateau."""
        self.t += 1
        if self.t < self.warmup:
            self._set_lr(self.lr0 * (self.t + 1) / (self.warmup + 1))
            return
        if self.main is None:  # warm-up just ended
            self._set_lr(self.lr0)
            for g in self.optimizer.param_groups:
                g.pop("initial_lr", None)
            self.main = _main_scheduler(self.optimizer, self.hp, self.main_epochs, self.lr0)
            return
        if isinstance(self.main, sch.ReduceLROnPlateau):
            if val_loss is not None:
                self.main.step(val_loss)
        else:
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "main": self.main.state_dict() if self.main else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = state["t"]
        if state["main"] is not None:
            if self.main is None:
                self.main = _main_scheduler(self.optimizer, self.hp, self.main_epochs, self.lr0)
            self.main.load_state_dict(state["main"])
