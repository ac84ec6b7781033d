"""Same seed, same metrics: two runs of the recipe with the demo's model and augmentation
give the same figures to the last bit, whatever ran before them in the process (the demo's
promise, docs/guide/demo.md)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from services import demo
from tests.unit.test_loop import tiny_data
from training.hyperparams import Hyperparameters
from training.loop import TwoPhaseRun

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")

TIMING = {"epoch_time_s", "images_per_s", "data_wait"}  # the clock's, not the seed's


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as each Ray Train worker of the demo has (Ray sets
    OMP_NUM_THREADS to the worker's CPUs): fast on a busy machine, where two threads
    contend for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(hp: Hyperparameters) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    run = TwoPhaseRun(hp, tiny_data(n_per_class=8), quiet=True)
    while not run.done:
        run.run_epoch()
    history = [{k: v for k, v in r.items() if k not in TIMING} for r in run.history]
    return history, run.eval_module.state_dict()


def test_the_same_seed_gives_the_same_epochs_and_weights() -> None:
    # the demo's recipe: its backbone, augmentation (random rotation, shift and zoom) and
    # both phases, on a few tiny images
    hp = Hyperparameters(
        **{
            **demo.TRANSFER_RECIPE,
            "image_size": 16,
            "batch_size": 8,
            "phase1_epochs": 1,
            "phase2_epochs": 1,
        }
    )
    first, weights = _run(hp)
    torch.rand(7), np.random.rand(7)  # the process's global RNGs moved on meanwhile
    again, weights_again = _run(hp)
    assert again == first  # exactly: losses, accuracies, lr per epoch
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    other, _ = _run(hp.model_copy(update={"seed": 1}))
    assert other != first  # the seed is what decides them
