"""Datasets, samplers and loaders (training.loaders)."""

import numpy as np
import torch

from training.hyperparams import Hyperparameters
from training.loaders import DistributedWeightedSampler, train_loader, val_batches


def test_weighted_sampler_balances_classes_across_ranks():
    labels = np.array([0] * 90 + [1] * 10)
    draws = []
    for rank in (0, 1):
        s = DistributedWeightedSampler(labels, num_replicas=2, rank=rank, seed=0)
        s.set_epoch(3)
        draws.append(list(s))
    assert len(draws[0]) == len(draws[1]) == 50
    drawn = labels[np.array(draws[0] + draws[1])]
    assert 0.35 < drawn.mean() < 0.65  # class 1 is 10 % of the data, about half the draws
    s0 = DistributedWeightedSampler(labels, 2, 0, seed=0)
    s0.set_epoch(3)
    assert list(s0) == draws[0]  # the same draw for the same seed and epoch


def test_train_loader_shards_the_split_across_ranks_and_drops_a_last_batch_of_one():
    hp = Hyperparameters(image_size=8, batch_size=4, augment="none")
    images = np.zeros((20, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(20) % 2
    indices = np.arange(18)
    loaders = [train_loader(hp, images, labels, indices, rank=r, world_size=2) for r in (0, 1)]
    for loader in loaders:
        loader.sampler.set_epoch(1)
    seen = [int(i) for loader in loaders for i in loader.sampler]
    assert sorted(seen) == list(range(18))  # 9 per rank, disjoint
    assert all(loader.drop_last for loader in loaders)  # 9 = 4 + 4 + 1: the 1 is dropped
    assert [len(y) for _, y in loaders[0]] == [4, 4]


def test_val_batches_walk_the_indices_in_order():
    images = np.arange(5 * 3 * 4 * 4, dtype=np.uint8).reshape(5, 3, 4, 4)
    labels = np.array([0, 1, 2, 3, 4])
    batches = list(val_batches(images, labels, np.array([4, 0, 2]), 2))
    assert [y.tolist() for _, y in batches] == [[4, 0], [2]]
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (2, 3, 4, 4)
