"""The optimizer of a phase (Adam, AdamW or SGD with momentum) and the autocast
precision of a device (``amp``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from training.hyperparams import Hyperparameters


def make_optimizer(
    hp: Hyperparameters, params: Iterable[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=hp.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=hp.weight_decay)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 (or fp16) autocast on a GPU; off on the CPU, where bf16 autocast is
    slower than fp32 on most processors. ``bf16`` / ``fp16`` force it, ``off`` disables."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16
