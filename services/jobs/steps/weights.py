"""load_weights: the backbone's state dict to start from, if any."""

from __future__ import annotations

import torch

from services.config import Settings
from services.errors import StepFailed, one_line
from services.store.fetch import fetch_file
from services.store.storage import StoreError
from training.hyperparams import Hyperparameters
from training.model import (
    build_model,
    is_weights_name,
    load_backbone_weights,
    load_named_weights,
    read_state_dict,
)


def load_weights(
    hp: Hyperparameters, n_classes: int, settings: Settings
) -> dict[str, torch.Tensor] | None:
    """The state dict named by ``hp.weights``, checked against the backbone (None when no
    weights are named): torchvision's registered weights by name (``imagenet``,
    ``IMAGENET1K_V2``...; cached under <home>/torch), or a file by path or s3:// URI."""
    if not hp.weights:
        return None
    try:
        if is_weights_name(hp.weights):
            state = load_named_weights(hp.backbone, hp.weights, settings.resolved_home / "torch")
        else:
            state = read_state_dict(fetch_file(hp.weights, settings))
        load_backbone_weights(build_model(hp.backbone, n_classes, hp.dropout), state)
    except (FileNotFoundError, ValueError, StoreError) as e:
        raise StepFailed("weights", one_line(e)) from None
    return state
