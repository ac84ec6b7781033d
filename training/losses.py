"""Losses: cross-entropy (label smoothing, class weights), multi-class focal, or a custom
callable named by import path (``loss=package.module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.hyperparams import Hyperparameters

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): mean of -w_y (1 - p_y)^γ log p_y."""

    weight: torch.Tensor | None  # a buffer (register_buffer)

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


def balanced_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """sklearn's 'balanced' weights: n_samples / (n_classes * count(class))."""
    # imported here: sklearn (and the scipy and pandas it brings) costs every Ray Train
    # worker seconds of its start, for a figure only class_weights="balanced" needs
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = np.ones(num_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(w, dtype=torch.float32)


def import_callable(path: str) -> Callable[..., Any]:
    """``package.module:name`` to the object it names, with a clear error."""
    from training.plugins import IMPORT_PATH

    if not isinstance(path, str) or not IMPORT_PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not an import path 'package.module:name'")
    module, _, name = path.partition(":")
    try:
        obj: object = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {path!r}: {e}") from None
    if not callable(obj):
        raise ValueError(f"{path!r} is not callable")
    return obj


def build_loss(hp: Hyperparameters, train_labels: np.ndarray, num_classes: int) -> LossFn:
    weight = balanced_weights(train_labels, num_classes) if hp.class_weights == "balanced" else None
    if hp.loss == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=hp.label_smoothing)
    if hp.loss == "focal":
        return FocalLoss(hp.focal_gamma, weight)
    obj = import_callable(hp.loss)
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return obj()
    return cast(LossFn, obj)  # a user's function: its signature is known only when it runs
