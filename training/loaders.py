"""Datasets, samplers and loaders: how a run's images reach the model.

``ArrayDataset`` serves decoded uint8 images by index through a transform, so every part
(train job, Tune trial, preflight) shares one decoded array. ``DistributedWeightedSampler``
is class-balanced sampling that shards one seeded draw across ranks. ``train_loader``
builds a rank's training DataLoader (the distributed or weighted sampler, loader
processes, pinned memory); ``val_batches`` walks a rank's slice of the validation split
in fixed order with the eval transform. ``ArrayBatches`` (decoded arrays in memory) and
``StreamedBatches`` (Ray Data shards, training.shards) are the two batch sources a run
steps through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from training.augment import eval_transform, per_image, train_transform
from training.hyperparams import Hyperparameters

if TYPE_CHECKING:
    from training.shards import ShardImages

T = TypeVar("T")


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(
        self,
        images: np.ndarray | ShardImages,
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

    def __iter__(self) -> Iterator[int]:
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
) -> DataLoader[tuple[torch.Tensor, int]]:
    """This rank's training DataLoader over ``indices``, augmented by ``hp``; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch."""
    ds = ArrayDataset(images, labels, indices, train_transform(hp))
    if hp.sampler == "weighted":
        sampler: DistributedWeightedSampler | DistributedSampler[int]
        sampler = DistributedWeightedSampler(labels[indices], world_size, rank, hp.seed)
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


def with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Each item with whether it is the last one (a stream's length is not known ahead)."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


class Timed(Iterator[T]):
    """``items`` as they come, adding up in ``seconds`` how long each one took to come:
    the time a training step waited for its batch (on a GPU, a CUDA step queued before
    still runs meanwhile, so this is the wait of the host, an upper bound on the GPU's)."""

    def __init__(self, items: Iterable[T]):
        self.items, self.seconds = iter(items), 0.0

    def __next__(self) -> T:
        t0 = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - t0


class ArrayBatches:
    """A rank's batches from decoded images in memory: the training DataLoader (sampler,
    loader processes) and its slice of the validation split."""

    def __init__(
        self, hp: Hyperparameters, data: Any, rank: int, world_size: int, pin_memory: bool
    ):
        self.data = data
        self.loader = train_loader(
            hp,
            data.images,
            data.labels,
            data.train_idx,
            rank=rank,
            world_size=world_size,
            pin_memory=pin_memory,
        )
        self.val_idx = data.val_idx[rank::world_size]

    def train(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.loader.sampler
        assert isinstance(sampler, (DistributedWeightedSampler, DistributedSampler))
        sampler.set_epoch(epoch)
        return self.loader

    def val(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return val_batches(self.data.images, self.data.labels, self.val_idx, batch_size)


class StreamedBatches:
    """A rank's batches streamed by Ray Data (``ray.train.get_dataset_shard``): uint8
    images from the decoded shards, augmented on the batch on the worker's device (each
    image its own random draw).

    ``train_it`` is this rank's split of one stream holding every epoch of the run
    (``ShardSet.part(epochs=...)``: one Ray Data execution for the whole run, its reads
    overlapping training across epoch ends). An epoch takes the next ``n_train //
    world_size`` rows of it in whole batches, the same count on every rank (DDP needs as
    many steps everywhere; the split gives equal rows): over the run every train image is
    seen once per epoch, give or take the rows a rank's epoch borrows from its neighbour
    across the boundary. ``val_it`` walks every validation row and this rank keeps those
    with ``id % world_size == rank``; a slice of at most ``val_keep_bytes`` is kept in
    memory after the first pass (each pass is an execution of its own)."""

    def __init__(
        self,
        hp: Hyperparameters,
        train_it: Any,
        val_it: Any,
        n_train: int,
        rank: int,
        world_size: int,
        device: torch.device,
        val_keep_bytes: int = 512 * 2**20,
    ):
        from training.shards import quiet_ray_data

        quiet_ray_data()
        self.hp, self.train_it, self.val_it = hp, train_it, val_it
        self.rank, self.world_size, self.device = rank, world_size, device
        self.per_rank = n_train // world_size
        # as the in-memory loader: whole batches (no last batch of one), one short batch
        # when a rank has fewer rows than a batch
        self.batch_size = max(1, min(hp.batch_size, self.per_rank))
        self.steps = self.per_rank // self.batch_size
        self.val_keep_bytes = val_keep_bytes
        self._val_kept: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stream: Iterator[dict[str, torch.Tensor]] | None = None
        self.augment = per_image(train_transform(hp))
        self.normalize = eval_transform()

    def _next(self) -> dict[str, torch.Tensor]:
        if self._stream is None:
            self._stream = iter(
                self.train_it.iter_torch_batches(
                    batch_size=self.batch_size,
                    drop_last=True,  # rows come shuffled by their readers (ShardSet.part)
                    device="cpu",
                    prefetch_batches=2,
                )
            )
        try:
            return next(self._stream)
        except StopIteration:
            raise RuntimeError(
                "the train stream ended before the run's last epoch (it holds "
                "phase1_epochs + phase2_epochs passes: ShardSet.part(epochs=...))"
            ) from None

    def train(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ARG002
        for _ in range(self.steps):
            b = self._next()
            x = b["image"].to(self.device, non_blocking=True)
            yield self.augment(x), b["label"].to(self.device, non_blocking=True)

    def val(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._val_kept is not None:  # this rank's slice, kept since the first pass
            images, labels = self._val_kept
            for s in range(0, len(labels), batch_size):
                x = images[s : s + batch_size].to(self.device, non_blocking=True)
                yield self.normalize(x), labels[s : s + batch_size]
            return
        kept: list[tuple[torch.Tensor, torch.Tensor]] | None = []
        size = 0
        for b in self.val_it.iter_torch_batches(batch_size=batch_size, device="cpu"):
            mine = b["id"] % self.world_size == self.rank
            if bool(mine.any()):
                x, y = b["image"][mine], b["label"][mine]
                size += x.numel()
                if kept is not None and size <= self.val_keep_bytes:
                    kept.append((x, y))
                else:
                    kept = None
                yield self.normalize(x.to(self.device, non_blocking=True)), y
        if kept is not None:  # small enough: later epochs skip a Ray Data execution
            self._val_kept = (
                torch.cat([x for x, _ in kept]) if kept else torch.zeros(0, dtype=torch.uint8),
                torch.cat([y for _, y in kept]) if kept else torch.zeros(0, dtype=torch.int64),
            )
