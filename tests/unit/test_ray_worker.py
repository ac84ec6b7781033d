"""Checkpoint files and resume (training.ray_worker), without Ray."""

import pytest
import torch

from tests.unit.test_callbacks import run_with
from tests.unit.test_loop import HP, tiny_data
from training.hyperparams import Hyperparameters
from training.loop import TwoPhaseRun
from training.ray_worker import (
    RNG_FILE,
    STATE_FILE,
    UnsafeCheckpoint,
    read_checkpoint,
    write_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")


def test_each_rank_restores_its_own_random_state(tmp_path):
    run = run_with([])
    write_checkpoint(run, tmp_path)
    torch.save(torch.manual_seed(123).get_state(), tmp_path / RNG_FILE.format(rank=1))
    state, rng0 = read_checkpoint(tmp_path, 0)
    _, rng1 = read_checkpoint(tmp_path, 1)
    assert torch.equal(rng0, state["rng"]) and not torch.equal(rng0, rng1)


def run_epochs(hp, n=None, run=None):
    run = run or TwoPhaseRun(hp, tiny_data(), quiet=True)
    while not run.done and (n is None or run.epoch < n):
        run.run_epoch()
    return run


def test_resume_through_checkpoint_files_equals_the_uninterrupted_run(tmp_path):
    """Stopped in phase 2 (EarlyStopping and ModelCheckpoint holding best weights, an EMA,
    a plateau schedule), written to files, read back as plain data: the same run."""
    hp = Hyperparameters(
        **{
            **HP,
            "phase2_epochs": 3,
            "ema_decay": 0.9,
            "callbacks": ["ModelCheckpoint", "CSVLogger"],
        }
    )
    full = run_epochs(hp)
    first = run_epochs(hp, 3)
    write_checkpoint(first, tmp_path)
    state, rng = read_checkpoint(tmp_path, 0)
    assert state["phase_pos"] == 1 and state["epoch"] == 3
    resumed = TwoPhaseRun(hp, tiny_data(), quiet=True)
    resumed.load_state_dict(state, rng)
    run_epochs(hp, run=resumed)
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history])
    for (k, a), b in zip(
        full.eval_module.state_dict().items(), resumed.eval_module.state_dict().values()
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


class WritesAFile:
    """What a planted state.pt could hold: unpickling it runs code (writes ``path``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('pwned')",)


def test_a_checkpoint_holding_code_is_refused_and_the_code_never_runs(tmp_path):
    run = run_epochs(Hyperparameters(**HP), 1)
    write_checkpoint(run, tmp_path)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    marker = tmp_path / "pwned.txt"
    state["callbacks"] = {"payload": WritesAFile(marker)}
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(UnsafeCheckpoint, match="refused to load state.pt.*exec"):
        read_checkpoint(tmp_path, 0)
    assert not marker.exists()
    torch.save(WritesAFile(marker), tmp_path / RNG_FILE.format(rank=0))
    state["callbacks"] = run.callbacks.state_dict()
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(UnsafeCheckpoint, match="refused to load rng-0.pt"):
        read_checkpoint(tmp_path, 0)
    assert not marker.exists()
    # the payload is real: an unrestricted load would have run it
    torch.load(tmp_path / RNG_FILE.format(rank=0), weights_only=False)
    assert marker.read_text() == "pwned"
