"""Checkpoint files and resume (training.ray_worker), without Ray."""

import pytest
import torch

from training.ray_worker import RNG_FILE, read_checkpoint, write_checkpoint
from tests.unit.test_callbacks import run_with

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")


def test_each_rank_restores_its_own_random_state(tmp_path):
    run = run_with([])
    write_checkpoint(run, tmp_path)
    torch.save(torch.manual_seed(123).get_state(), tmp_path / RNG_FILE.format(rank=1))
    state, rng0 = read_checkpoint(tmp_path, 0)
    _, rng1 = read_checkpoint(tmp_path, 1)
    assert torch.equal(rng0, state["rng"]) and not torch.equal(rng0, rng1)
