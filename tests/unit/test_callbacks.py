"""The Keras/Lightning-style callbacks, run through the real loop via ``callbacks=``."""

import csv

import pytest
import torch

from training.callbacks import LambdaCallback, build_callbacks
from training.hyperparams import Hyperparameters
from training.loop import TwoPhaseRun
from training.model import load_model
from training.ray_worker import RNG_FILE, STATE_FILE, write_checkpoint
from tests.unit.test_loop import HP, tiny_data

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")

SEEN: list = []


def record_epoch(epoch, logs):
    SEEN.append((epoch, round(logs["lr"], 8)))


def halve(epoch, lr):
    return 0.01 * 0.5 ** epoch


def run_with(callbacks, **hp):
    run = TwoPhaseRun(Hyperparameters(**{**HP, **hp, "callbacks": callbacks}), tiny_data(),
                      quiet=True)
    while not run.done:
        run.run_epoch()
    return run


def test_csv_logger_writes_a_row_per_epoch_into_the_checkpoint_and_its_path(tmp_path):
    run = run_with([{"name": "CSVLogger", "path": str(tmp_path / "live.csv")}])
    write_checkpoint(run, tmp_path, final=True)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["lr"]) for r in rows] == [1e-2, 1e-2, 1e-3, 1e-3]
    assert open(tmp_path / "live.csv").read() == open(tmp_path / "history.csv").read()
    assert {STATE_FILE, RNG_FILE.format(rank=0), "model.pt"} <= {p.name for p in tmp_path.iterdir()}


def test_model_checkpoint_keeps_the_best_epochs_weights(tmp_path):
    run = run_with(["ModelCheckpoint"])
    write_checkpoint(run, tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    losses = [r["val_loss"] for r in run.history]
    assert best["epoch"] == 1 + losses.index(min(losses))
    assert best["val_loss"] == pytest.approx(min(losses))
    model, _ = load_model(best)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_learning_rate_scheduler_and_monitor():
    run = run_with([{"name": "LearningRateScheduler", "schedule": "tests.unit.test_callbacks:halve"},
                    {"name": "LearningRateMonitor", "logging_interval": "step"}],
                   schedule="none")
    # each phase restarts its epoch count: 0.01, 0.005 in both phases
    assert [r["lr"] for r in run.history] == pytest.approx([0.01, 0.005, 0.01, 0.005])
    assert [r["lr-group0"] for r in run.history] == pytest.approx([0.01, 0.005, 0.01, 0.005])
    assert all(len(r["lr-steps"]) == len(run._train_loader) for r in run.history)


def test_tensorboard_writes_event_files(tmp_path):
    run = run_with([{"name": "TensorBoard", "log_dir": str(tmp_path / "tb")}])
    (tmp_path / "ckpt").mkdir()
    write_checkpoint(run, tmp_path / "ckpt")
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and b"val_loss" in events[0].read_bytes()
    assert list((tmp_path / "ckpt" / "tensorboard").glob("events.out.tfevents.*"))


def test_lambda_callback_by_import_path_sees_every_epoch():
    SEEN.clear()
    run_with([{"name": "LambdaCallback", "on_epoch_end": "tests.unit.test_callbacks:record_epoch"}])
    assert SEEN == [(1, 0.01), (2, 0.01), (3, 0.001), (4, 0.001)]


def test_custom_callback_class_by_import_path_and_its_state_survives_resume():
    hp = {"callbacks": ["tests.unit.test_callbacks:EpochCounter"]}
    first = TwoPhaseRun(Hyperparameters(**{**HP, **hp}), tiny_data(), quiet=True)
    first.run_epoch()
    first.run_epoch()
    second = TwoPhaseRun(Hyperparameters(**{**HP, **hp}), tiny_data(), quiet=True)
    second.load_state_dict(first.state_dict())
    while not second.done:
        second.run_epoch()
    counter = [c for c in second.extra_callbacks if isinstance(c, EpochCounter)][0]
    assert counter.seen == [1, 2, 3, 4]


def test_bad_callback_specs_are_clear_errors():
    with pytest.raises(ValueError, match="cannot import 'nowhere:Thing'"):
        build_callbacks(["nowhere:Thing"])
    with pytest.raises(ValueError, match="callback CSVLogger:"):
        build_callbacks([{"name": "CSVLogger", "colour": "red"}])
    with pytest.raises(ValueError, match="not a training.callbacks.Callback"):
        build_callbacks(["tests.unit.test_callbacks:halve"])
    with pytest.raises(ValueError, match="unknown hook"):
        LambdaCallback(on_lunch=print)
    with pytest.raises(ValueError):
        Hyperparameters(callbacks=[{"kwargs": 1}])


from training.callbacks import Callback  # noqa: E402


class EpochCounter(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(epoch)

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])
