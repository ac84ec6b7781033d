"""Tuning without Ray: the grid, the folds, the lockstep reports and the ranking math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import TINY
from training import data
from training.hyperparams import Hyperparameters
from tuning import report
from tuning.search import (CVData, FoldsInLockstep, TrialOutcome, _error_line, aggregate,
                           cv_folds, expand_grid, max_epochs, parse_grid, search_space,
                           validate_grid)


# ------------------------------------------------------------------ the grid
def test_grid_values_are_read_like_set_values():
    grid = parse_grid(["phase1_lr=1e-3, 3e-4", "optimizer=adam,sgd", "hflip=true,false",
                       "milestones=[3,6],[5,10]", "grad_clip=none,1.0"])
    assert grid == {"phase1_lr": [1e-3, 3e-4], "optimizer": ["adam", "sgd"],
                    "hflip": [True, False], "milestones": [[3, 6], [5, 10]],
                    "grad_clip": [None, 1.0]}
    assert len(expand_grid(grid)) == 2 * 2 * 2 * 2 * 2
    assert validate_grid(grid) == grid


@pytest.mark.parametrize("args, message", [
    (["lr=1,2"], "unknown hyperparameter 'lr'"),
    (["phase1_lr"], "expects key=v1,v2"),
    (["phase1_lr=1e-3,"], "empty value"),
    (["phase1_lr=1e-3", "phase1_lr=1e-4"], "given twice"),
])
def test_bad_grid_text_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(args)


@pytest.mark.parametrize("grid, message", [
    ({"phase1_lr": [1e-3, -1]}, "phase1_lr=-1: phase1_lr: Input should be greater than 0"),
    ({"optimizer": ["adam", "rmsprop"]}, "optimizer='rmsprop'"),
    ({"batch_size": ["big"]}, "batch_size='big'"),
    ({"phase1_lr": []}, "no values"),
    ({"phase1_lr": [1e-3, 0.001]}, "given twice"),
    ({"lr": [1]}, "unknown hyperparameter 'lr'"),
    ({"seed": [1, 2]}, "seed cannot be tuned"),
    ({"test_frac": [0.1, 0.2]}, "test split stays held out"),
    ({"image_size": [32, 64]}, "image_size cannot be tuned"),
    ({"gate_accuracy": [0.5]}, "gate judges the final model"),
    ({"phase1_lr": "1e-3"}, "expected a list"),
])
def test_bad_grid_values_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        validate_grid(grid)


def test_every_combination_is_checked_on_top_of_the_base():
    base = Hyperparameters(phase2_epochs=0)
    with pytest.raises(ValueError, match="phase1_epochs \\+ phase2_epochs must be at least 1"):
        validate_grid({"phase1_epochs": [0, 2]}, base)
    # the same grid is fine where phase 2 has epochs
    assert validate_grid({"phase1_epochs": [0, 2]}, Hyperparameters()) == {
        "phase1_epochs": [0, 2]}
    # values come back as the recipe reads them
    assert validate_grid({"phase1_lr": ["1e-3"], "hflip": ["false"]}) == {
        "phase1_lr": [0.001], "hflip": [False]}


def test_search_space_and_max_t():
    from ray import tune
    grid = {"phase1_lr": [1e-3, 1e-2], "phase2_epochs": [1, 4]}
    space = search_space(grid)
    assert space == {k: tune.grid_search(v) for k, v in grid.items()}
    sampled = search_space(grid, num_samples=5)
    assert all(isinstance(v, tune.search.sample.Categorical) for v in sampled.values())
    assert sampled["phase2_epochs"].categories == [1, 4]
    assert max_epochs(grid, Hyperparameters(phase1_epochs=2)) == 6
    assert max_epochs({}, Hyperparameters(phase1_epochs=2, phase2_epochs=3)) == 5


def test_cli_tune_exits_2_on_a_bad_grid_and_writes_nothing(tmp_path, make_dataset, capsys):
    from services.cli import main
    root = make_dataset(per_class=12)
    for grid in (["lr=1,2"], ["phase1_lr=1e-3,-1"], ["seed=1,2"]):
        with pytest.raises(SystemExit) as e:
            main(["tune", "--dataset", str(root), "--grid", grid[0], "--k-folds", "3"])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["tune", "--dataset", str(root), "--grid", "phase1_lr=1e-3", "--k-folds", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown hyperparameter 'lr'" in err and "k_folds" in err
    assert not (tmp_path / "home" / "colecionador.db").exists()


# ------------------------------------------------------------------ the folds
def labels_of(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)


def test_folds_are_stratified_disjoint_cover_train_and_val_and_never_touch_test():
    y = labels_of([60, 40, 20])
    sp = data.split(y, 0.1, 0.1, seed=3)
    folds = cv_folds(y, sp, k=4, seed=3)
    pool = np.union1d(sp.train, sp.val)
    assert len(folds) == 4
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == pool.tolist()  # each train+val image validated once
    for train, val in folds:
        assert not set(train) & set(val)
        assert sorted(np.concatenate([train, val]).tolist()) == pool.tolist()
        assert not set(train) & set(sp.test) and not set(val) & set(sp.test)
        # stratified: each class's share of the fold's val is its share of the pool
        share = np.bincount(y[val], minlength=3) / len(val)
        assert np.allclose(share, np.bincount(y[pool]) / len(pool), atol=0.05)
    assert len(sp.test) == 12 and [len(v) for _, v in folds] == [27, 27, 27, 27]
    # the same seed gives the same folds
    again = cv_folds(y, sp, k=4, seed=3)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))


def test_folds_need_k_images_of_every_class():
    y = labels_of([30, 30, 4])
    sp = data.split(y, 0.1, 0.1)
    with pytest.raises(ValueError, match="k_folds=5 needs at least 5 images of every class"):
        cv_folds(y, sp, k=5)
    with pytest.raises(ValueError, match="overlaps"):
        cv_folds(y, data.Split(sp.train, sp.val, sp.train[:2]), k=2)


# ------------------------------------------------------------ lockstep, reports
def _fold(i, val_loss, val_acc, *, done=False, ran=True, phase=1):
    return {"fold": i, "epoch": 1, "phase": phase, "standing_epoch": 1, "ran": ran,
            "done": done, "loss": 1.0, "accuracy": 0.5, "val_loss": val_loss,
            "val_accuracy": val_acc, "lr": 1e-3}


def test_aggregate_is_mean_and_population_std_over_folds():
    folds = [_fold(0, 1.0, 0.5), _fold(1, 2.0, 0.7, done=True, ran=False, phase=2),
             _fold(2, 3.0, 0.9)]
    r = aggregate(4, folds, done=False, max_epochs=6)
    assert (r["epoch"], r["max_epochs"], r["folds_done"], r["trial_done"]) == (4, 6, 1, False)
    assert r["val_loss"] == pytest.approx(2.0)
    assert r["val_loss_std"] == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert r["val_accuracy"] == pytest.approx(0.7)
    assert r["val_accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert r["phase"] == 1  # the phase of the folds that trained this epoch
    assert r["folds"] == folds


class _Run:
    def __init__(self, history, done=False, restored=None):
        self.history, self.done, self.restored_epoch = history, done, restored


def test_a_finished_fold_stands_at_its_restored_best_epoch():
    h = [{"epoch": e, "val_loss": v} for e, v in ((1, 0.9), (2, 0.5), (3, 0.7))]
    assert FoldsInLockstep.standing(_Run(h))["epoch"] == 3  # still going: its last epoch
    assert FoldsInLockstep.standing(_Run(h, done=True))["epoch"] == 3
    assert FoldsInLockstep.standing(_Run(h, done=True, restored=2))["val_loss"] == 0.5


def test_folds_step_in_lockstep_with_the_train_job_recipe(make_dataset):
    root = make_dataset(per_class=8, size=16)
    hp = Hyperparameters(**{**TINY, "image_size": 16, "phase1_epochs": 2, "phase2_epochs": 1})
    d = data.load(root, hp.image_size, "fail", hp.min_per_class)
    sp = data.split(d.labels, seed=0)
    cv = FoldsInLockstep(hp, CVData(d.images, d.labels, d.classes,
                                    cv_folds(d.labels, sp, 2)))
    reports = []
    while not cv.done:
        reports.append(cv.step())
    assert [r["epoch"] for r in reports] == [1, 2, 3] and cv.iteration == 3
    assert [r["phase"] for r in reports] == [1, 1, 2]
    assert reports[-1]["trial_done"] and reports[-1]["folds_done"] == 2
    for r in reports:
        assert [f["fold"] for f in r["folds"]] == [0, 1]
        assert all(f["epoch"] == r["epoch"] and f["ran"] for f in r["folds"])
        assert r["val_loss"] == pytest.approx(np.mean([f["val_loss"] for f in r["folds"]]))
    # each fold is a TwoPhaseRun on its own fold (the same recipe as a train job)
    assert [len(run.data.val_idx) for run in cv.runs] == [len(v) for _, v in
                                                          cv_folds(d.labels, sp, 2)]
    assert all(run.quiet for run in cv.runs) and cv.failure is None
    with pytest.raises(RuntimeError):
        cv.step()


def test_a_diverged_fold_names_itself():
    cv = FoldsInLockstep.__new__(FoldsInLockstep)
    cv.runs = [_Run([]), _Run([])]
    cv.runs[0].failure, cv.runs[1].failure = None, "loss became nan at epoch 2"
    assert cv.failure == "fold 1 diverged: loss became nan at epoch 2"


def test_error_line_is_the_exception_line_of_the_trace(tmp_path):
    import cloudpickle

    class T:
        pickled_error_file = None
        error_file = str(tmp_path / "error.txt")

    (tmp_path / "error.txt").write_text(
        "Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 3\n"
        "    raise RuntimeError(cv.failure)\n"
        "RuntimeError: fold 1 diverged: loss became nan at epoch 2\n")
    assert _error_line(T()) == "RuntimeError: fold 1 diverged: loss became nan at epoch 2"

    class Wrapped(Exception):  # as a RayTaskError carries the trial's own exception
        def __init__(self, cause):
            super().__init__("long trace")
            self.cause = cause

    T.pickled_error_file = str(tmp_path / "error.pkl")
    with open(T.pickled_error_file, "wb") as f:
        cloudpickle.dump(Wrapped(RuntimeError("fold 0 diverged: loss became nan")), f)
    assert _error_line(T()) == "RuntimeError: fold 0 diverged: loss became nan"


# ------------------------------------------------------------------ ranking
def _trial(index, status, losses, stds=None, accs=None, config=None, error=None):
    stds = stds or [0.0] * len(losses)
    accs = accs or [0.5] * len(losses)
    history = [{"epoch": e + 1, "val_loss": v, "val_loss_std": s, "val_accuracy": a,
                "val_accuracy_std": 0.01} for e, (v, s, a) in enumerate(zip(losses, stds, accs))]
    return TrialOutcome(index, f"t{index}", config or {"phase1_lr": 10.0 ** -index}, status,
                        history, max_epochs=3, error=error)


def test_summary_has_last_and_best_epoch_figures():
    c = report.summarize(_trial(0, "completed", [0.9, 0.4, 0.6], [0.1, 0.2, 0.3]))
    assert (c.stopped_at, c.last["epoch"], c.last["val_loss"], c.last["val_loss_std"]) == (
        3, 3, 0.6, 0.3)
    assert (c.best["epoch"], c.mean("val_loss", "best"), c.std("val_loss", "best")) == (2, 0.4, 0.2)
    acc = report.summarize(_trial(0, "completed", [0.9, 0.4, 0.6], accs=[0.2, 0.9, 0.8]),
                           "val_accuracy")
    assert acc.best["epoch"] == 2 and acc.metric == "val_accuracy"
    nan = report.summarize(_trial(0, "failed", [float("nan")]))
    assert nan.last["val_loss"] is None and nan.best is None


def test_ranking_by_mean_then_std_with_stopped_and_failed_configs_after():
    trials = [
        _trial(0, "completed", [0.8, 0.5], [0.1, 0.20]),
        _trial(1, "completed", [0.9, 0.5], [0.1, 0.05]),   # same mean, smaller std: first
        _trial(2, "completed", [0.7, 0.6], [0.1, 0.00]),
        _trial(3, "stopped_early", [0.3]),                 # better number, but stopped
        _trial(4, "failed", [0.1], error="RuntimeError: fold 0 diverged"),
        _trial(5, "completed", [float("nan")]),            # no estimate: last of its group
    ]
    ranked = report.rank(trials)
    assert [c.index for c in ranked] == [1, 0, 2, 5, 3, 4]
    assert [c.rank for c in ranked] == [1, 2, 3, 4, 5, 6]
    assert report.best(ranked).index == 1
    # by accuracy (mode max) the order turns
    by_acc = report.rank([_trial(0, "completed", [0.5], accs=[0.6]),
                          _trial(1, "completed", [0.4], accs=[0.9])], "val_accuracy")
    assert [c.index for c in by_acc] == [1, 0]
    # nothing usable: no winner
    assert report.best(report.rank([_trial(0, "failed", [0.1])])) is None
    assert report.best(report.rank([_trial(0, "completed", [float("nan")])])) is None
    with pytest.raises(ValueError):
        report.rank(trials, "f1")


def test_table_and_progress_line():
    ranked = report.rank([_trial(0, "completed", [0.8, 0.5], [0.1, 0.2]),
                          _trial(1, "stopped_early", [2.5], [0.4]),
                          _trial(2, "failed", [], error="RuntimeError: boom")])
    text = report.table(ranked)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["rank", "status", "epochs", "val_loss", "val_accuracy"]
    assert lines[2].split()[:6] == ["1", "completed", "2/3", "0.5000", "±", "0.2000"]
    assert "phase1_lr=1" in lines[2] and "2: 0.5000 ± 0.2000" in lines[2]
    assert lines[3].split()[:3] == ["2", "stopped_early", "1/3"]
    assert lines[4].split()[:4] == ["3", "failed", "0/3", "-"] and "(RuntimeError: boom)" in lines[4]
    line = report.trial_line(_trial(1, "stopped_early", [2.5], [0.4]), total=3)
    assert line.startswith("trial 2/3 stopped_early at epoch 1/3: val_loss 2.5000 ± 0.4000")
    assert report.config_text({}) == "(the base config)"
    assert report.config_text({"phase1_lr": 0.001, "milestones": [3, 6]}) == \
        "phase1_lr=0.001 milestones=[3,6]"
    assert not math.isnan(ranked[0].mean("val_loss"))
