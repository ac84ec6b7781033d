"""Train and eval transforms on decoded uint8 (3, H, W) tensors, torchvision.transforms.v2.

``default`` is the source system's Keras ImageDataGenerator pipeline expressed in
torchvision: rotation ±20°, width/height shift ±20 %, zoom ±20 %, horizontal flip, then
ImageNet normalisation. Images are already resized when decoded (training/data.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from training.hyperparams import Hyperparameters

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_float() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform() -> v2.Compose:
    return v2.Compose(_to_float())


def train_transform(hp: Hyperparameters) -> v2.Compose:
    if hp.augment == "none":
        return eval_transform()
    steps: list[v2.Transform] = []
    if hp.rotation or hp.shift or hp.zoom:
        steps.append(
            v2.RandomAffine(
                degrees=hp.rotation,
                translate=(hp.shift, hp.shift) if hp.shift else None,
                scale=(1 - hp.zoom, 1 + hp.zoom) if hp.zoom else None,
            )
        )
    if hp.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _to_float())


def per_image(transform: v2.Transform) -> Callable[[torch.Tensor], torch.Tensor]:
    """``transform`` on a uint8 batch (B, 3, H, W), on the batch's device, each image with
    its own random draw: v2's random transforms given a batch draw once for all of it."""

    def apply(batch: torch.Tensor) -> torch.Tensor:
        if not len(batch):
            return batch.float()
        return torch.stack([transform(x) for x in batch])

    return apply
