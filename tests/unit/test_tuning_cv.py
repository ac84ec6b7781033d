"""k folds in lockstep (tuning.cv), without Ray: the folds, the reports, the recipe."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY
from training import data
from training.hyperparams import Hyperparameters
from tuning.cv import CVData, FoldsInLockstep, aggregate, cv_folds


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
    return {
        "fold": i,
        "epoch": 1,
        "phase": phase,
        "standing_epoch": 1,
        "ran": ran,
        "done": done,
        "loss": 1.0,
        "accuracy": 0.5,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "lr": 1e-3,
    }


def test_aggregate_is_mean_and_population_std_over_folds():
    folds = [
        _fold(0, 1.0, 0.5),
        _fold(1, 2.0, 0.7, done=True, ran=False, phase=2),
        _fold(2, 3.0, 0.9),
    ]
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
    cv = FoldsInLockstep(hp, CVData(d.images, d.labels, d.classes, cv_folds(d.labels, sp, 2)))
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
    assert [len(run.data.val_idx) for run in cv.runs] == [
        len(v) for _, v in cv_folds(d.labels, sp, 2)
    ]
    assert all(run.quiet for run in cv.runs) and cv.failure is None
    with pytest.raises(RuntimeError):
        cv.step()
    # every train + val image once, from the fold that held it out (label issues, #17)
    idx, probs = cv.out_of_fold_probs()
    assert idx.tolist() == np.union1d(sp.train, sp.val).tolist()
    assert probs.shape == (len(idx), len(d.classes)) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_diverged_fold_names_itself():
    cv = FoldsInLockstep.__new__(FoldsInLockstep)
    cv.runs = [_Run([]), _Run([])]
    cv.runs[0].failure, cv.runs[1].failure = None, "loss became nan at epoch 2"
    assert cv.failure == "fold 1 diverged: loss became nan at epoch 2"


# ------------------------------------------------- out-of-fold probabilities (#17)
class LazyImages:
    """Images that are no array (as training.shards.ShardImages): read with ``take``."""

    def __init__(self, images: np.ndarray):
        self.images, self.taken = images, []

    def __len__(self) -> int:
        return len(self.images)

    def take(self, positions) -> np.ndarray:
        self.taken.append(np.asarray(positions))
        return self.images[positions]


def test_local_folds_of_lazy_images_map_back_to_the_jobs_numbering():
    y = labels_of([10, 10, 10])
    sp = data.split(y, 0.1, 0.2, seed=1)  # 6 test images, spread over the numbering
    images = np.arange(len(y), dtype=np.uint8).reshape(-1, 1, 1, 1) * np.ones((1, 3, 2, 2))
    images = images.astype(np.uint8)  # image i is filled with the value i
    folds = cv_folds(y, sp, 3, seed=1)
    lazy = LazyImages(images)
    local = CVData(lazy, y, ["a", "b", "c"], folds).local()
    pool = np.union1d(sp.train, sp.val)
    assert [t.tolist() for t in lazy.taken] == [pool.tolist()]  # the test split is not read
    assert isinstance(local.images, np.ndarray) and len(local.images) == len(pool) < len(y)
    for (a, b), (la, lb) in zip(folds, local.folds):
        assert local.original(lb).tolist() == b.tolist()  # renumbered, and mapped back
        assert local.original(la).tolist() == a.tolist()
        assert (local.images[lb, 0, 0, 0] == b).all() and (local.labels[lb] == y[b]).all()
    assert local.original(np.arange(len(pool))).tolist() == pool.tolist()
    # images in memory keep the job's numbering
    mem = CVData(images, y, ["a", "b", "c"], folds)
    assert mem.local() is mem and mem.original(np.array([3, 1])).tolist() == [3, 1]


class _Report:
    """tune.report as a trial sees it: each report, and the checkpoint's oof.npz read
    while its folder still exists."""

    def __init__(self):
        self.reports, self.checkpoints = [], []

    def __call__(self, metrics, checkpoint=None):
        from tuning.cv import read_out_of_fold

        self.reports.append(metrics)
        if checkpoint is not None:
            self.checkpoints.append((len(self.reports), read_out_of_fold(checkpoint.path)))


@pytest.mark.parametrize("label_check", [True, False])
def test_the_last_report_carries_out_of_fold_probs_in_the_jobs_numbering(
    make_dataset, monkeypatch, label_check
):
    """With or without label_check: a tune job's calibration fits on them too."""
    import ray
    from ray import tune

    from tuning.cv import cv_trainable

    root = make_dataset(per_class=9, size=16)
    hp = Hyperparameters(**{**TINY, "image_size": 16, "phase1_epochs": 1, "phase2_epochs": 1})
    d = data.load(root, hp.image_size, "fail", hp.min_per_class)
    sp = data.split(d.labels, 0.1, 0.2, seed=0)
    folds = cv_folds(d.labels, sp, 2)
    report = _Report()

    class Context:
        def get_assigned_resources(self):
            return {"CPU": 1.0}

    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(tune, "report", report)
    cv_trainable(
        {"phase1_lr": 1e-3},
        data=CVData(LazyImages(d.images), d.labels, d.classes, folds),
        base={**hp.effective(), "label_check": label_check},
    )
    assert [r["epoch"] for r in report.reports] == [1, 2] and report.reports[-1]["trial_done"]
    ((at, (index, probs)),) = report.checkpoints
    assert at == 2  # the last report
    pool = np.union1d(sp.train, sp.val)
    assert len(sp.test) > 0 and index.dtype == np.int64 and probs.dtype == np.float32
    assert index.tolist() == pool.tolist()  # the job's indices, not the renumbered ones
    assert probs.shape == (len(pool), len(d.classes))
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


class FakeShards:
    """A ShardSet's streaming side over images in memory: ``part`` records what each
    fold asked for and streams those rows ``epochs`` times (as Ray Data would)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels, self.parts = images, labels, []
        self.order = np.random.default_rng(0).permutation(len(labels))  # position -> id

    def kept(self) -> np.ndarray:
        return self.order

    def part(self, ids, epochs=1, seed=0, readers=4):
        self.parts.append((np.asarray(ids), epochs))
        at = {int(i): p for p, i in enumerate(self.order)}
        rows = np.array([at[int(i)] for i in np.tile(ids, epochs)])
        images, labels = self.images, self.labels

        class Stream:
            def iter_torch_batches(self, *, batch_size, drop_last=False, **_kw):
                import torch

                stop = len(rows) - len(rows) % batch_size if drop_last else len(rows)
                for s in range(0, stop, batch_size):
                    r = rows[s : min(s + batch_size, stop)]
                    yield {
                        "id": torch.as_tensor(r),
                        "label": torch.as_tensor(labels[r]),
                        "image": torch.as_tensor(images[r]),
                    }

        return Stream()


def test_folds_of_a_sharded_data_set_stream_every_epoch_without_reading_images_whole(
    make_dataset,
):
    """With shards, a trial never reads train + val into memory: each fold streams its
    train rows (all its epochs in one stream) and its val rows from the shards, and
    its out-of-fold probabilities come from lazy views of its val rows."""
    root = make_dataset(per_class=8, size=16)
    hp = Hyperparameters(**{**TINY, "image_size": 16, "phase1_epochs": 2, "phase2_epochs": 1})
    d = data.load(root, hp.image_size, "fail", hp.min_per_class)
    sp = data.split(d.labels, seed=0)
    folds = cv_folds(d.labels, sp, 2)
    lazy, shards = LazyImages(d.images), FakeShards(d.images, d.labels)
    cv_data = CVData(lazy, d.labels, d.classes, folds, shards=shards)
    assert cv_data.streamed and cv_data.local() is cv_data
    cv = FoldsInLockstep(hp, cv_data)
    while not cv.done:
        cv.step()
    assert lazy.taken == []  # training read no image but through the streams
    train_parts, val_parts = shards.parts[0::2], shards.parts[1::2]
    for (a, b), (tr, e_tr), (va, e_va) in zip(folds, train_parts, val_parts):
        assert tr.tolist() == shards.order[a].tolist() and e_tr == 3  # every epoch, once
        assert va.tolist() == shards.order[b].tolist() and e_va == 1
    assert cv.runs[0].history[-1]["images_per_s"] > 0
