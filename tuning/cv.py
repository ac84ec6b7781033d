"""k-fold cross-validation inside one Ray Tune trial: the folds and the trainable.

A trial trains its config on k stratified folds of train + val (the test split is never in
a fold) with k ``TwoPhaseRun`` objects, the same recipe a train job runs, stepped in
lockstep, one epoch of every fold per iteration (``FoldsInLockstep``). Each iteration
reports the mean and std over folds of val_loss and val_accuracy (and every fold's own
figures) with ``ray.tune.report``, so ASHA stops weak configs early on the cross-validated
estimate, not on one split's noise. ``cv_trainable`` is that plain Tune function trainable,
run in-process with the trial's own resources (tuning.search says why not a TorchTrainer).

The k fold models of a config that trained to the end are also what confident learning
needs (training/label_issues.py), and what a tune job's temperature is fitted on
(training/calibration.py ``fit_split``): every train + val image's probabilities from the
fold model that held it out. Such a trial attaches them to its last report as a Tune
checkpoint (``oof.npz``: ``index`` in the job's numbering, ``probs``), so a tune job
calibrates on its winner's and its label check reads them instead of fitting a linear head
(services/jobs/steps.py ``evaluate``, ``check_labels``); one prediction of train + val per
finished trial.

A large data set (decoded shards, ``CVData.shards``) is streamed inside the trial too: each
fold reads its train rows through one Ray Data stream holding all its epochs and its
validation rows through another (training.loaders.StreamedBatches, world size 1), so a
trial holds a few batches per fold, not the train + val images. Without shards a trial
with lazy images reads train + val into memory once (``local``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from training.data import Split, kfold
from training.hyperparams import Hyperparameters
from training.loop import TrainData, TwoPhaseRun, WorkerInfo
from training.shards import ShardImages
from tuning.grid import total_epochs


def cv_folds(
    labels: np.ndarray, split: Split, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds over train + val; the test split is in none of them."""
    pool = np.union1d(split.train, split.val)
    if np.intersect1d(pool, split.test).size:
        raise ValueError("the test split overlaps train + val")
    if k < 2:
        raise ValueError("k_folds must be at least 2")
    counts = np.bincount(np.asarray(labels)[pool])
    short = [i for i, n in enumerate(counts) if 0 < n < k]
    if short or (counts == 0).any():
        i = short[0] if short else int(np.argmin(counts))
        raise ValueError(
            f"k_folds={k} needs at least {k} images of every class in train + "
            f"val; class index {i} has {counts[i]}"
        )
    return kfold(labels, pool, k, seed)


@dataclass
class CVData:
    """What every trial shares (through the object store): decoded images and the folds.
    ``images`` may be lazy (training.shards.ShardImages: a large data set's decoded
    shards); a trial then reads its train + val images from the shards (``local``).
    ``origin`` maps this object's image positions to the job's (None: the same).
    ``shards`` (training.shards.ShardSet, with lazy ``images`` numbered as its
    ``decoded()``): each fold streams its rows (``fold_batches``) instead."""

    images: np.ndarray | ShardImages
    labels: np.ndarray
    classes: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]
    origin: np.ndarray | None = None
    shards: Any = None

    @property
    def streamed(self) -> bool:
        return self.shards is not None and not isinstance(self.images, np.ndarray)

    def fold_batches(self, i: int, hp: Hyperparameters, device: torch.device) -> Any:
        """Fold ``i``'s batches streamed from the shards (None when not ``streamed``):
        its train rows ``total_epochs`` times over in one stream, its val rows once per
        epoch (kept in memory after the first pass when under 512 MB / k)."""
        if not self.streamed:
            return None
        from training.loaders import StreamedBatches

        train, val = self.folds[i]
        ids = self.shards.kept()  # position -> listing id
        return StreamedBatches(
            hp,
            self.shards.part(ids[train], epochs=total_epochs(hp), seed=hp.seed + i, readers=2),
            self.shards.part(ids[val], readers=1),
            len(train),
            0,
            1,
            device,
            val_keep_bytes=512 * 2**20 // len(self.folds),
        )

    def original(self, idx: np.ndarray) -> np.ndarray:
        """Positions here -> the job's image indices (what its split and labels use)."""
        idx = np.asarray(idx, np.int64)
        return idx if self.origin is None else np.asarray(self.origin, np.int64)[idx]

    def fold(self, i: int) -> TrainData:
        train, val = self.folds[i]
        return TrainData(self.images, self.labels, train, val, self.classes)

    def local(self) -> CVData:
        """The same folds over images in memory: itself when they are, else the images
        of train + val read from the shards (never a JPEG), the folds renumbered and
        ``origin`` mapping the new positions back to the job's indices."""
        if isinstance(self.images, np.ndarray) or self.streamed:
            return self
        pool = np.unique(np.concatenate([np.concatenate(f) for f in self.folds]))
        at = np.full(len(self.labels), -1, np.int64)
        at[pool] = np.arange(len(pool))
        return CVData(
            self.images.take(pool),
            self.labels[pool],
            self.classes,
            [(at[a], at[b]) for a, b in self.folds],
            self.original(pool),
        )


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())  # population std, as sklearn's CV results


class FoldsInLockstep:
    """k ``TwoPhaseRun`` objects, one per fold, stepped together: ``step()`` runs one
    epoch of every fold that is still going and returns the iteration's report.

    A fold that has finished (its epochs done, or phase 2's EarlyStopping) stands at its
    final model, which is the restored best epoch when EarlyStopping restored one; its
    figures are carried into the mean until every fold is done. A fold whose loss went
    NaN/inf (TerminateOnNaN) makes the config ``diverged``.
    """

    def __init__(
        self,
        hp: Hyperparameters,
        data: CVData,
        *,
        backbone_state: dict[str, torch.Tensor] | None = None,
        device: torch.device | None = None,
        quiet: bool = True,
    ):
        self.hp = hp
        worker = WorkerInfo(device=device or torch.device("cpu"))
        self.runs = [
            TwoPhaseRun(
                hp,
                data.fold(i),
                worker=worker,
                backbone_state=backbone_state,
                quiet=quiet,
                batches=data.fold_batches(i, hp, worker.device),
            )
            for i in range(len(data.folds))
        ]
        self.iteration = 0
        self.max_epochs = total_epochs(hp)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.runs)

    @property
    def failure(self) -> str | None:
        return next(
            (f"fold {i} diverged: {r.failure}" for i, r in enumerate(self.runs) if r.failure), None
        )

    def step(self) -> dict[str, Any]:
        if self.done:
            raise RuntimeError("every fold is finished")
        self.iteration += 1
        ran = []
        for r in self.runs:
            ran.append(not r.done)
            if not r.done:
                r.run_epoch()
        return self.report(ran)

    @staticmethod
    def standing(run: TwoPhaseRun) -> dict[str, Any]:
        """The figures of the model this fold stands at now."""
        logs = run.history[-1]
        if run.done and run.restored_epoch is not None:
            logs = next((h for h in run.history if h["epoch"] == run.restored_epoch), logs)
        return logs

    def out_of_fold_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, probabilities) of every train + val image, each from the fold model
        that held it out (its final model): the out-of-fold probabilities confident
        learning needs (training/label_issues.py find_issues), at no extra training."""
        from training.evaluate import predict_probs

        idx, probs = [], []
        for run in self.runs:
            val = run.data.val_idx
            idx.append(val)
            images = run.data.images
            images = images.view(val) if isinstance(images, ShardImages) else images[val]
            probs.append(predict_probs(run.eval_module, images, device=run.device))
        order = np.argsort(np.concatenate(idx), kind="stable")
        return np.concatenate(idx)[order], np.concatenate(probs)[order]

    def report(self, ran: list[bool] | None = None) -> dict[str, Any]:
        ran = ran or [True] * len(self.runs)
        folds = []
        for i, (r, did) in enumerate(zip(self.runs, ran)):
            s = self.standing(r)
            folds.append(
                {
                    "fold": i,
                    "epoch": r.epoch,
                    "phase": s["phase"],
                    "standing_epoch": s["epoch"],
                    "ran": did,
                    "done": r.done,
                    **{
                        k: float(s[k])
                        for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
                    },
                }
            )
        return aggregate(self.iteration, folds, done=self.done, max_epochs=self.max_epochs)


def aggregate(
    iteration: int, folds: list[dict[str, Any]], *, done: bool, max_epochs: int
) -> dict[str, Any]:
    """One iteration's report: mean and std over folds of each figure, and the folds."""
    out: dict[str, Any] = {
        "epoch": iteration,
        "max_epochs": max_epochs,
        "phase": max(f["phase"] for f in folds if f["ran"])
        if any(f["ran"] for f in folds)
        else folds[0]["phase"],
        "folds_done": sum(f["done"] for f in folds),
        "trial_done": done,
    }
    for k in ("val_loss", "val_accuracy", "loss", "accuracy"):
        out[k], out[f"{k}_std"] = _mean_std([f[k] for f in folds])
    out["folds"] = folds
    return out


OOF_FILE = "oof.npz"  # in a trial's checkpoint: index (int64, the job's), probs (float32)


def save_out_of_fold(folder: str, index: np.ndarray, probs: np.ndarray) -> str:
    """Write ``oof.npz`` into ``folder`` (a checkpoint's directory); returns its path."""
    path = os.path.join(folder, OOF_FILE)
    np.savez(path, index=np.asarray(index, np.int64), probs=np.asarray(probs, np.float32))
    return path


def read_out_of_fold(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(index, probs) from a checkpoint directory written by ``save_out_of_fold``."""
    with np.load(os.path.join(folder, OOF_FILE)) as f:
        return f["index"].astype(np.int64), f["probs"].astype(np.float32)


def cv_trainable(
    config: dict[str, Any],
    *,
    data: CVData,
    base: dict[str, Any],
    backbone_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """The Tune function trainable: one config, k folds in lockstep, a report per epoch.
    The last report of a trial whose folds all finished carries its out-of-fold
    probabilities as a checkpoint (``oof.npz``, the job's image indices)."""
    import ray
    from ray import tune

    hp = Hyperparameters(**{**base, **config})
    resources = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    device = (
        torch.device("cuda")
        if resources.get("GPU") and torch.cuda.is_available()
        else torch.device("cpu")
    )
    data = data.local()
    cv = FoldsInLockstep(hp, data, backbone_state=backbone_state, device=device, quiet=True)
    while not cv.done:
        report = cv.step()
        # cast: step() may finish it, where mypy keeps the loop's `not cv.done`
        if cast(bool, cv.done) and not cv.failure:
            idx, probs = cv.out_of_fold_probs()
            with tempfile.TemporaryDirectory(prefix="oof-") as folder:
                save_out_of_fold(folder, data.original(idx), probs)
                # persisted to the run's storage before report returns
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
            return
        tune.report(report)  # NaN stays NaN here (ASHA ignores it); a diverged fold ends
        if cv.failure:  # the trial as failed right after the epoch is on record
            raise RuntimeError(cv.failure)
