"""The recipe in-process (no Ray): phases, callbacks, and resume from a state dict."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training.callbacks import EarlyStopping, TerminateOnNaN
from training.data import split
from training.hyperparams import Hyperparameters
from training.loop import TrainData, TwoPhaseRun

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")


def tiny_data(n_per_class=16, size=16, seed=0):
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(3):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, (3, size, size))
            if c == 0:
                img[:, ::3, :] = 250
            elif c == 1:
                img[:, :, ::3] = 250
            else:
                img[:, 4:12, 4:12] = 250
            imgs.append(img)
            labels.append(c)
    y = np.array(labels)
    s = split(y, 0.2, 0.1, seed=0)
    return TrainData(np.stack(imgs).astype(np.uint8), y, s.train, s.val, ["a", "b", "c"])


HP = dict(
    backbone="mobilenet_v3_small",
    image_size=16,
    batch_size=8,
    phase1_epochs=2,
    phase2_epochs=2,
    phase1_lr=1e-2,
    phase2_lr=1e-3,
    unfreeze_last=4,
    hflip=False,
    early_stopping_patience=5,
)


def fake_run():
    model = torch.nn.Linear(2, 2)
    return SimpleNamespace(
        eval_module=model, stop_training=False, failure=None, restored_epoch=None
    )


def test_early_stopping_stops_after_patience_and_restores_best():
    run = fake_run()
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.0)
    es.set_run(run)
    losses = [1.0, 0.5, 0.6, 0.7]
    for epoch, v in enumerate(losses, 1):
        if epoch == 2:
            best = {k: t.clone() for k, t in run.eval_module.state_dict().items()}
        es.on_epoch_end(epoch, {"val_loss": v})
        with torch.no_grad():
            run.eval_module.weight.add_(1.0)  # the weights move on every epoch
    assert run.stop_training and es.stopped_epoch == 4 and es.best_epoch == 2
    es.on_phase_end(2)
    assert torch.equal(run.eval_module.weight, best["weight"]) and run.restored_epoch == 2


def test_early_stopping_min_delta_and_state():
    es = EarlyStopping(patience=1, min_delta=0.1)
    es.set_run(fake_run())
    es.on_epoch_end(1, {"val_loss": 1.0})
    es.on_epoch_end(2, {"val_loss": 0.95})  # not better by more than 0.1
    assert es.run.stop_training and es.best == 1.0
    clone = EarlyStopping(patience=1)
    clone.load_state_dict(es.state_dict())
    assert (clone.best, clone.wait, clone.best_epoch) == (1.0, 1, 1)


def test_terminate_on_nan():
    cb = TerminateOnNaN()
    cb.set_run(fake_run())
    cb.on_epoch_end(3, {"loss": 0.3})
    assert not cb.run.stop_training
    cb.on_epoch_end(4, {"loss": math.nan})
    assert cb.run.stop_training and cb.run.failure == "loss became nan at epoch 4"


def test_two_phases_record_every_epoch_with_its_lr():
    run = TwoPhaseRun(Hyperparameters(**HP), tiny_data(), quiet=True)
    while not run.done:
        run.run_epoch()
    h = run.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and [r["phase"] for r in h] == [1, 1, 2, 2]
    assert [r["lr"] for r in h] == [1e-2, 1e-2, 1e-3, 1e-3]
    assert all(0 <= r["data_wait"] <= 1 and r["images_per_s"] > 0 for r in h)
    assert all(0 <= r["val_accuracy"] <= 1 and r["loss"] > 0 for r in h)
    assert run.summary()["epochs"] == 4


def test_resume_from_state_gives_the_same_model():
    hp = Hyperparameters(**HP)
    full = TwoPhaseRun(hp, tiny_data(), quiet=True)
    while not full.done:
        full.run_epoch()

    first = TwoPhaseRun(hp, tiny_data(), quiet=True)
    first.run_epoch()
    first.run_epoch()  # phase 1 done: the state is at the start of phase 2
    state = first.state_dict()
    assert state["phase_pos"] == 1 and state["epoch"] == 2

    resumed = TwoPhaseRun(hp, tiny_data(), quiet=True)
    resumed.load_state_dict(state)
    assert resumed.phase == 2 and resumed.phase_info["unfrozen_layers"] == 4
    while not resumed.done:
        resumed.run_epoch()
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history])
    for (k, a), b in zip(
        full.eval_module.state_dict().items(), resumed.eval_module.state_dict().values()
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_ema_weights_are_what_is_validated_and_exported():
    run = TwoPhaseRun(Hyperparameters(**{**HP, "ema_decay": 0.9}), tiny_data(), quiet=True)
    while not run.done:
        run.run_epoch()
    raw = run.module.state_dict()["classifier.3.weight"]
    ema = run.export()["state_dict"]["classifier.3.weight"]
    assert not torch.equal(raw.cpu(), ema)


CALLS = {"n": 0, "limit": 0}


def nan_after_first_epoch(logits, target):
    """A custom loss (by import path) that turns NaN from the second epoch's batches on."""
    CALLS["n"] += 1
    loss = torch.nn.functional.cross_entropy(logits, target)
    return loss * float("nan") if CALLS["n"] > CALLS["limit"] else loss


def test_nan_loss_ends_the_run_as_a_failure():
    CALLS["n"] = 0
    hp = Hyperparameters(**{**HP, "loss": "tests.unit.test_loop:nan_after_first_epoch"})
    run = TwoPhaseRun(hp, tiny_data(), quiet=True)
    CALLS["limit"] = len(run._train_loader)  # the whole first epoch is finite
    while not run.done:
        run.run_epoch()
    assert run.failure == "loss became nan at epoch 2" and run.epoch == 2 and run.done


def test_gradient_accumulation_matches_the_large_batch():
    """Two steps of 4 accumulated make the same update as one batch of 8 (no dropout,
    BatchNorm frozen in phase 1, no augmentation)."""

    def first_update(batch_size, accum):
        hp = Hyperparameters(
            **{
                **HP,
                "batch_size": batch_size,
                "grad_accum": accum,
                "dropout": 0.0,
                "augment": "none",
                "optimizer": "sgd",
            }
        )
        data = tiny_data()
        data.train_idx = data.train_idx[:8]
        run = TwoPhaseRun(hp, data, quiet=True)
        before = run.module.classifier[3].weight.detach().clone()
        run.run_epoch()
        return run.module.classifier[3].weight.detach() - before

    big, accumulated = first_update(8, 1), first_update(4, 2)
    assert big.abs().sum() > 0
    assert torch.allclose(big, accumulated, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    hp = Hyperparameters(
        **{
            **HP,
            "grad_clip": 1e-6,
            "optimizer": "sgd",
            "phase1_lr": 1.0,
            "augment": "none",
            "dropout": 0.0,
        }
    )
    run = TwoPhaseRun(hp, tiny_data(), quiet=True)
    before = [p.detach().clone() for p in run.module.classifier[3].parameters()]
    run.run_epoch()
    after = list(run.module.classifier[3].parameters())
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    # each optimizer step moves the head by at most lr * max_norm (+ momentum's carry)
    assert 0 < step.item() < 1e-5


def test_bf16_autocast_and_loader_processes_run_on_the_cpu():
    hp = Hyperparameters(**{**HP, "amp": "bf16", "loader_workers": 1, "phase2_epochs": 0})
    run = TwoPhaseRun(hp, tiny_data(), quiet=True)
    assert run.amp_dtype == torch.bfloat16 and run._train_loader.num_workers == 1
    logs = run.run_epoch()
    assert math.isfinite(logs["loss"]) and run._train_loader.persistent_workers
