"""The Keras/Lightning-style callbacks, run through the real loop via ``callbacks=``."""

import csv
import math

import pytest
import torch

from tests.unit.test_loop import HP, fake_run, tiny_data
from training.callbacks import (
    CallbackList,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    Monitor,
    RunView,
    TerminateOnNaN,
    build_callbacks,
)
from training.hyperparams import Hyperparameters
from training.loop import TwoPhaseRun
from training.model import load_model
from training.ray_worker import RNG_FILE, STATE_FILE, write_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")

SEEN: list = []


def record_epoch(epoch, logs):
    SEEN.append((epoch, round(logs["lr"], 8)))


def halve(epoch, lr):
    return 0.01 * 0.5**epoch


def run_with(callbacks, **hp):
    run = TwoPhaseRun(
        Hyperparameters(**{**HP, **hp, "callbacks": callbacks}), tiny_data(), quiet=True
    )
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
    run = run_with(
        [
            {"name": "LearningRateScheduler", "schedule": "tests.unit.test_callbacks:halve"},
            {"name": "LearningRateMonitor", "logging_interval": "step"},
        ],
        schedule="none",
    )
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


# --------------------------------------------- the callback contract (Lightning's pattern)
def test_the_run_is_what_callbacks_see_through_run_view():
    run = TwoPhaseRun(Hyperparameters(**HP), tiny_data(), quiet=True)
    assert isinstance(run, RunView)
    assert all(c.run is run for c in run.callbacks.callbacks)


def test_a_misspelled_hook_is_an_error_not_a_silent_no_op():
    callbacks = CallbackList([CSVLogger()], fake_run())
    callbacks.on_epoch_end(1, {"loss": 1.0})  # every hook is a method
    assert callbacks.callbacks[0].rows == [{"loss": 1.0}]
    with pytest.raises(AttributeError, match="on_epoch_ends"):
        callbacks.on_epoch_ends(1, {})
    with pytest.raises(AttributeError):
        callbacks.on_validation_end()


@pytest.mark.parametrize(
    "make",
    [
        lambda: EarlyStopping(mode="maxx"),
        lambda: ModelCheckpoint(mode="maxx"),
        lambda: Monitor("val_loss", "maxx"),
    ],
)
def test_a_mode_other_than_min_or_max_is_refused(make):
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'maxx'"):
        make()


def test_a_bad_mode_in_the_hyperparameters_names_the_callback():
    with pytest.raises(ValueError, match="callback ModelCheckpoint: mode must be 'min' or"):
        build_callbacks([{"name": "ModelCheckpoint", "mode": "maxx"}])


def test_monitor_improves_only_by_more_than_min_delta():
    low = Monitor("val_loss", "min", min_delta=0.1)
    assert low.best == math.inf and low.improved(1.0)
    low.best = 1.0
    assert not low.improved(0.95) and not low.improved(0.9) and low.improved(0.89)
    high = Monitor("val_accuracy", "max", min_delta=-0.05)  # the sign is ignored
    assert high.min_delta == 0.05 and high.best == -math.inf
    high.best = 0.5
    assert not high.improved(0.55) and high.improved(0.56)
    assert low.value({"val_loss": float("nan")}) is None and low.value({}) is None
    assert low.value({"val_loss": 2}) == 2.0


def test_should_stop_says_why_after_patience_without_improvement():
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    assert es.should_stop(1.0) == (False, None)
    assert es.should_stop(0.95) == (False, None)  # within min_delta: one epoch waited
    stop, reason = es.should_stop(0.92)
    assert stop and es.wait == 2 and es.best == 1.0
    assert reason == "val_loss did not improve by more than 0.1 for 2 epoch(s); best 1"
    assert es.should_stop(0.5) == (False, None) and es.wait == 0  # improving resets
    up = EarlyStopping("val_accuracy", "max", patience=1)
    assert up.should_stop(0.7) == (False, None)
    assert up.should_stop(0.6)[0] and up.best == 0.7


def test_early_stopping_records_its_reason_and_stops_the_run():
    run = fake_run()
    es = EarlyStopping(patience=1)
    es.set_run(run)
    es.on_epoch_end(1, {"val_loss": 1.0})
    es.on_epoch_end(2, {"val_loss": float("nan")})  # no value: neither better nor worse
    assert not run.stop_training and es.wait == 0
    es.on_epoch_end(3, {"val_loss": 1.5})
    assert run.stop_training and es.stopped_epoch == 3 and "val_loss" in es.stop_reason


def test_state_is_saved_by_key_and_round_trips():
    def callbacks():
        return CallbackList(
            [
                TerminateOnNaN(),
                EarlyStopping(patience=3),
                ModelCheckpoint("val_accuracy", "max"),
                CSVLogger(),
                CSVLogger("other.csv"),
            ],
            fake_run(),
        )

    first = callbacks()
    for epoch, (loss, acc) in enumerate([(1.0, 0.5), (0.8, 0.6), (0.9, 0.55)], 1):
        first.on_epoch_end(epoch, {"val_loss": loss, "val_accuracy": acc})
    state = first.state_dict()
    assert list(state) == [
        "EarlyStopping[val_loss,min]",
        "ModelCheckpoint[val_accuracy,max]",
        "CSVLogger",
        "CSVLogger#2",
    ]
    second = callbacks()
    second.load_state_dict(state)
    es, mc, csv_a, csv_b = second.callbacks[1:]
    assert (es.best, es.best_epoch, es.wait) == (0.8, 2, 1)
    assert (mc.best, mc.best_epoch) == (0.6, 2) and len(csv_a.rows) == len(csv_b.rows) == 3
    # a checkpoint from other callbacks (or the old positional list) is refused
    fewer = CallbackList([EarlyStopping(patience=3)], fake_run())
    with pytest.raises(ValueError, match="state without a callback for"):
        fewer.load_state_dict(state)
    with pytest.raises(ValueError, match="no state for"):
        callbacks().load_state_dict({})
    with pytest.raises(ValueError, match="by state_key"):
        fewer.load_state_dict([es.state_dict()])
