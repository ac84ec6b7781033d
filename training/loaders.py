"""Datasets, samplers and loaders: how a run's images reach the model.

``ArrayDataset`` serves decoded uint8 images by index through a transform, so every part
(train job, Tune trial, preflight) shares one decoded array. ``DistributedWeightedSampler``
is class-balanced sampling that shards one seeded draw across ranks. ``train_loader``
builds a rank's training DataLoader (the distributed or weighted sampler, loader
processes, pinned memory); ``val_batches`` walks a rank's slice of the validation split
in fixed order with the eval transform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from training.augment import eval_transform, train_transform
from training.hyperparams import Hyperparameters


class ArrayDataset(Dataset):
    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.images, self.labels, self.indices, self.transform = images, labels, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        return self.transform(torch.tensor(self.images[j])), int(self.labels[j])


class DistributedWeightedSampler(Sampler[int]):
    """Class-balanced sampling with replacement, the same draw on every rank, sharded by
    rank: each epoch every rank sees its own slice of one seeded multinomial draw."""

    def __init__(self, labels: np.ndarray, num_replicas: int, rank: int, seed: int):
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(labels) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(
            self.weights, self.num_samples * self.num_replicas, replacement=True, generator=g
        )
        return iter(draw[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def train_loader(
    hp: Hyperparameters,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """This rank's training DataLoader over ``indices``, augmented by ``hp``; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch."""
    ds = ArrayDataset(images, labels, indices, train_transform(hp))
    if hp.sampler == "weighted":
        sampler: Sampler = DistributedWeightedSampler(labels[indices], world_size, rank, hp.seed)
    else:
        sampler = DistributedSampler(
            ds, num_replicas=world_size, rank=rank, shuffle=True, seed=hp.seed
        )
    per_rank = len(sampler)
    workers = hp.loader_workers
    # A last batch of one breaks BatchNorm in train mode; timm drops it too. Loader
    # processes (augmentation off the training process) persist across epochs, and
    # pinned memory lets the copy to the GPU overlap compute (non_blocking).
    return DataLoader(
        ds,
        batch_size=hp.batch_size,
        sampler=sampler,
        drop_last=per_rank > hp.batch_size,
        pin_memory=pin_memory,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=hp.prefetch_factor if workers else None,
        generator=torch.Generator().manual_seed(hp.seed + rank),
    )


def val_batches(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) of ``indices`` in order, ``batch_size`` at a time, eval-transformed:
    no shuffling and no loader processes, so every validation sees the same batches."""
    tf = eval_transform()
    for s in range(0, len(indices), batch_size):
        idx = indices[s : s + batch_size]
        yield tf(torch.from_numpy(images[idx])), torch.from_numpy(labels[idx])
