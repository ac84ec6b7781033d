"""Preflight: check the recipe can learn before spending a training run on it.

- Overfit one batch: all layers train on one fixed batch; the loss must fall near zero in
  a bounded number of steps, or something is broken (labels, data, model, loss).
- LR range test (Smith 2015; torch-lr-finder): the phase-1 setting (frozen backbone, new
  head) trained with an exponentially increasing lr; the loss curve as a PNG and the lr of
  the steepest descent as the suggestion for phase1_lr.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.augment import eval_transform, train_transform
from training.hyperparams import Hyperparameters
from training.loaders import ArrayDataset
from training.loop import TrainData
from training.losses import build_loss
from training.model import (
    build_model,
    load_backbone_weights,
    set_phase,
    train_mode,
    trainable_parameters,
)
from training.optim import make_optimizer


class _FrozenBatchNormStaysFrozen(torch.nn.Module):
    """LRFinder calls ``model.train()``: keep frozen BatchNorm layers in eval mode, as the
    training loop does (training.model.train_mode)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out

    def train(self, mode: bool = True) -> _FrozenBatchNormStaysFrozen:
        super().train(mode)
        if mode:
            train_mode(self.model)
        return self


def _model(
    hp: Hyperparameters,
    data: TrainData,
    backbone_state: dict[str, torch.Tensor] | None,
    device: torch.device,
) -> torch.nn.Module:
    torch.manual_seed(hp.seed)
    model = build_model(hp.backbone, len(data.classes), hp.dropout)
    if backbone_state is not None:
        load_backbone_weights(model, backbone_state)
    return model.to(device)


def overfit_one_batch(
    hp: Hyperparameters,
    data: TrainData,
    backbone_state: dict[str, torch.Tensor] | None = None,
    *,
    steps: int = 150,
    target_loss: float = 0.05,
    lr: float = 1e-3,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train every layer on one batch of ``hp.batch_size`` train images (no augmentation)
    until the loss is under ``target_loss``; ``passed`` says whether it got there."""
    device = torch.device(device)
    model = _model(hp, data, backbone_state, device)
    model.train()
    rng = np.random.default_rng(hp.seed)
    idx = np.sort(
        rng.choice(data.train_idx, min(hp.batch_size, len(data.train_idx)), replace=False)
    )
    x = eval_transform()(torch.from_numpy(data.images[idx])).to(device)
    y = torch.from_numpy(data.labels[idx]).to(device)
    loss_fn = build_loss(hp, data.labels[data.train_idx], len(data.classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        if losses[-1] < target_loss:
            break
    passed = losses[-1] < target_loss
    return {
        "passed": passed,
        "steps": len(losses),
        "batch": len(idx),
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "target_loss": target_loss,
        "losses": losses,
        "message": (
            f"overfit one batch of {len(idx)}: loss {losses[0]:.3f} -> "
            f"{losses[-1]:.4f} in {len(losses)} steps"
            + (
                ""
                if passed
                else f"; it never fell under {target_loss} in {steps}"
                " steps: check the labels, the data and the loss"
            )
        ),
    }


def lr_range_test(
    hp: Hyperparameters,
    data: TrainData,
    backbone_state: dict[str, torch.Tensor] | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The loss against an exponentially increasing lr in the phase-1 setting; returns
    the suggested lr (steepest descent), the curve, and a PNG of it."""
    from torch_lr_finder import LRFinder

    from training.plots import plt, png_bytes  # type: ignore[attr-defined]  # Agg's pyplot

    device = torch.device(device)
    model = _model(hp, data, backbone_state, device)
    set_phase(model, 1, hp.unfreeze_last)
    train_mode(model)
    loader = DataLoader(
        ArrayDataset(data.images, data.labels, data.train_idx, train_transform(hp)),
        batch_size=hp.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(hp.seed),
    )
    opt = make_optimizer(hp, trainable_parameters(model), start_lr)
    loss_fn = build_loss(hp, data.labels[data.train_idx], len(data.classes))
    finder = LRFinder(_FrozenBatchNormStaysFrozen(model), opt, loss_fn, device=device)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        finder.range_test(
            loader, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, step_mode="exp"
        )
        fig, ax = plt.subplots(figsize=(6, 4))
        skip_start, skip_end = min(10, num_iter // 10), min(5, num_iter // 20)
        _, suggested = finder.plot(skip_start=skip_start, skip_end=skip_end, ax=ax, suggest_lr=True)
    ax.set_title(f"LR range test ({hp.backbone}, phase 1): suggested {suggested:.2g}")
    png = png_bytes(fig)
    history = finder.history
    finder.reset()
    return {
        "suggested_lr": float(suggested),
        "lrs": [float(v) for v in history["lr"]],
        "losses": [float(v) for v in history["loss"]],
        "iterations": len(history["lr"]),
        "png": png,
    }


def preflight(
    hp: Hyperparameters,
    data: TrainData,
    backbone_state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Both checks; ``png`` is the LR range test's curve."""
    overfit = overfit_one_batch(hp, data, backbone_state, device=device)
    lr = lr_range_test(hp, data, backbone_state, device=device)
    png = lr.pop("png")
    return {"overfit": overfit, "lr_range": lr, "png": png}
