"""The search's outcome (tuning.report): per-config figures, the ranking, the tables."""

from __future__ import annotations

import math

import pytest

from tuning import report
from tuning.search import TrialOutcome


def _trial(index, status, losses, stds=None, accs=None, config=None, error=None):
    stds = stds or [0.0] * len(losses)
    accs = accs or [0.5] * len(losses)
    history = [
        {
            "epoch": e + 1,
            "val_loss": v,
            "val_loss_std": s,
            "val_accuracy": a,
            "val_accuracy_std": 0.01,
        }
        for e, (v, s, a) in enumerate(zip(losses, stds, accs))
    ]
    return TrialOutcome(
        index,
        f"t{index}",
        config or {"phase1_lr": 10.0**-index},
        status,
        history,
        max_epochs=3,
        error=error,
    )


def test_summary_has_last_and_best_epoch_figures():
    c = report.summarize(_trial(0, "completed", [0.9, 0.4, 0.6], [0.1, 0.2, 0.3]))
    assert (c.stopped_at, c.last["epoch"], c.last["val_loss"], c.last["val_loss_std"]) == (
        3,
        3,
        0.6,
        0.3,
    )
    assert (c.best["epoch"], c.mean("val_loss", "best"), c.std("val_loss", "best")) == (2, 0.4, 0.2)
    acc = report.summarize(
        _trial(0, "completed", [0.9, 0.4, 0.6], accs=[0.2, 0.9, 0.8]), "val_accuracy"
    )
    assert acc.best["epoch"] == 2 and acc.metric == "val_accuracy"
    nan = report.summarize(_trial(0, "failed", [float("nan")]))
    assert nan.last["val_loss"] is None and nan.best is None


def test_ranking_by_mean_then_std_with_stopped_and_failed_configs_after():
    trials = [
        _trial(0, "completed", [0.8, 0.5], [0.1, 0.20]),
        _trial(1, "completed", [0.9, 0.5], [0.1, 0.05]),  # same mean, smaller std: first
        _trial(2, "completed", [0.7, 0.6], [0.1, 0.00]),
        _trial(3, "stopped_early", [0.3]),  # better number, but stopped
        _trial(4, "failed", [0.1], error="RuntimeError: fold 0 diverged"),
        _trial(5, "completed", [float("nan")]),  # no estimate: last of its group
    ]
    ranked = report.rank(trials)
    assert [c.index for c in ranked] == [1, 0, 2, 5, 3, 4]
    assert [c.rank for c in ranked] == [1, 2, 3, 4, 5, 6]
    assert report.best(ranked).index == 1
    # by accuracy (mode max) the order turns
    by_acc = report.rank(
        [_trial(0, "completed", [0.5], accs=[0.6]), _trial(1, "completed", [0.4], accs=[0.9])],
        "val_accuracy",
    )
    assert [c.index for c in by_acc] == [1, 0]
    # nothing usable: no winner
    assert report.best(report.rank([_trial(0, "failed", [0.1])])) is None
    assert report.best(report.rank([_trial(0, "completed", [float("nan")])])) is None
    with pytest.raises(ValueError):
        report.rank(trials, "f1")


def test_table_and_progress_line():
    ranked = report.rank(
        [
            _trial(0, "completed", [0.8, 0.5], [0.1, 0.2]),
            _trial(1, "stopped_early", [2.5], [0.4]),
            _trial(2, "failed", [], error="RuntimeError: boom"),
        ]
    )
    text = report.table(ranked)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["rank", "status", "epochs", "val_loss", "val_accuracy"]
    assert lines[2].split()[:6] == ["1", "completed", "2/3", "0.5000", "±", "0.2000"]
    assert "phase1_lr=1" in lines[2] and "2: 0.5000 ± 0.2000" in lines[2]
    assert lines[3].split()[:3] == ["2", "stopped_early", "1/3"]
    assert lines[4].split()[:4] == ["3", "failed", "0/3", "-"]
    assert "(RuntimeError: boom)" in lines[4]
    line = report.trial_line(_trial(1, "stopped_early", [2.5], [0.4]), total=3)
    assert line.startswith("trial 2/3 stopped_early at epoch 1/3: val_loss 2.5000 ± 0.4000")
    assert report.config_text({}) == "(the base config)"
    assert (
        report.config_text({"phase1_lr": 0.001, "milestones": [3, 6]})
        == "phase1_lr=0.001 milestones=[3,6]"
    )
    assert not math.isnan(ranked[0].mean("val_loss"))
