"""Ray Tune wiring: the search over a space, ASHA, and the collector of every trial.

``run_search`` takes the validated ``TuningSpec`` (tuning.spec: grid and space, search
strategy, folds, sampling, metric, scheduler) and a ``SearchRun`` (each trial's resources,
Tune's storage, the run's name), runs one ``cv_trainable`` per config (tuning.cv: k folds in
lockstep) with ``ASHAScheduler`` (or FIFO), and returns every trial as it ended; the
``listener`` hears each one as it ends (a failed trial is recorded, not raised). A trial
that ran to its end leaves its out-of-fold probabilities as a Tune
checkpoint (tuning.cv); the collector keeps where (``TrialOutcome.oof_checkpoint``, in the
run's snapshot too, so a restored run still knows) and ``load_out_of_fold`` reads them.

The configs come from the strategy: ``grid`` (``tune.grid_search`` per list), ``random``
(Tune's seeded ``BasicVariantGenerator`` drawing ``num_samples``) or ``tpe`` (Ray Tune's
``OptunaSearch`` with Optuna's ``TPESampler``, seeded). ASHA is the same under all three:
a config it stops early is told to the searcher with its last (partial) estimate.

Why not a TorchTrainer per trial (Ray's Tune + Train V2 pattern): it hung here with
``WorkerGroupStartupTimeoutError`` (notes/stack.md). The cause is a resource deadlock: each
trial's driver holds 1 CPU of the trial's bundle, so N concurrent trials on N CPUs leave
none for the trainers' worker placement groups. It runs when the drivers leave room
(``max_concurrent_trials=1`` on 2 CPUs, or a token bundle ``{"cpu": 0.01}``; ``{"cpu": 0}``
is refused as empty), but every trial then pays Ray Train's ~20 s worker-group start-up
and k folds would need k trainers. A trial here is one process with its own resources
(1 CPU, or 1 CPU + 1 GPU), and trials run in parallel across the cluster.

This package imports training/, never services/: results go to whoever passes a listener.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import torch

from training.data import Split
from training.hyperparams import Hyperparameters
from tuning.collector import (
    HOOKS,
    REPORT_KEYS,
    Hooks,
    TrialOutcome,
    _make_collector,
    error_line,
)
from tuning.cv import CVData, cv_folds, cv_trainable, read_out_of_fold
from tuning.grid import max_epochs
from tuning.space import ends, to_tune, validate_space
from tuning.spec import TuningSpec

if TYPE_CHECKING:
    from ray import tune
    from ray.tune.schedulers import TrialScheduler

__all__ = [
    "HOOKS",
    "QUIET_ENV",
    "REPORT_KEYS",
    "Hooks",
    "SearchResult",
    "SearchRun",
    "TrialOutcome",
    "_make_collector",
    "error_line",
    "load_out_of_fold",
    "run_search",
    "searcher",
]


@dataclass
class SearchRun:
    """Where and with what one search runs (what the spec leaves to the caller): each
    trial's resources, Tune's storage (a local temporary folder when None) and the run's
    name (unique per search: Tune resumes a run whose storage and name exist)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    storage_path: str | None = None
    storage_filesystem: Any = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0:
            raise ValueError("a trial needs at least some CPU (Tune rejects an empty bundle)")
        if self.gpus_per_trial < 0:
            raise ValueError("gpus_per_trial must not be negative")

    def resources(self) -> dict[str, float]:
        res = {"cpu": self.cpus_per_trial}
        if self.gpus_per_trial:
            res["gpu"] = self.gpus_per_trial
        return res


@dataclass
class SearchResult:
    trials: list[TrialOutcome]
    spec: TuningSpec
    grid: dict[str, Any]  # the spec's grid and space as the recipe reads them
    max_t: int
    folds: list[dict[str, int]]  # sizes of each fold's train / val
    wall_s: float
    resumed: bool = False  # restored from the run's storage after its driver died

    @property
    def epochs_run(self) -> int:
        """Iterations (one epoch of every fold each) over all trials."""
        return sum(t.stopped_at for t in self.trials)

    @property
    def fold_epochs_run(self) -> int:
        """Epochs actually trained, counting every fold of every trial."""
        return sum(
            sum(1 for h in t.history for f in h.get("folds", []) if f.get("ran"))
            for t in self.trials
        )


QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # an experiment snapshot (what a restore reads) at most every 2 s instead of Tune's
    # "auto" (10 s or more): a trial is told ended only once a snapshot holds it
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
}


def run_search(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    split: Split,
    base: Hyperparameters,
    spec: TuningSpec,
    run: SearchRun | None = None,
    *,
    backbone_state: dict[str, torch.Tensor] | None = None,
    listener: Callable[[TrialOutcome], None] | None = None,
    on_result: Callable[[TrialOutcome, dict[str, Any]], None] | None = None,
    shards: Any = None,
    dims: dict[str, Any] | None = None,
) -> SearchResult:
    """Run the whole search of ``spec`` on top of ``base`` on the connected Ray cluster;
    every trial ends in the result (a failed trial is recorded, not raised). ``listener``
    hears each trial as it ends, ``on_result`` each report. ``shards``: the decoded shards
    behind lazy ``images``; ``dims``: the space validate_space gave on ``base`` (or None)."""
    from ray import tune

    run = run or SearchRun()
    dims = dims if dims is not None else validate_space(spec.dimensions, base)
    epoch_keys = {k: ends(d) for k, d in dims.items() if k in ("phase1_epochs", "phase2_epochs")}
    max_t = max_epochs(epoch_keys, base)
    folds = cv_folds(labels, split, spec.k_folds, base.seed)
    data = CVData(images, labels, list(classes), folds, shards=shards)
    trainable = tune.with_parameters(
        cv_trainable, data=data, base=base.effective(), backbone_state=backbone_state
    )
    trainable = tune.with_resources(trainable, run.resources())
    name = run.name or f"tune-{int(time.time())}"
    own_storage = None
    storage_path = run.storage_path
    if storage_path is None:
        own_storage = tempfile.TemporaryDirectory(prefix="colecionador-tune-")
        storage_path = own_storage.name
    path = f"{storage_path.rstrip('/')}/{name}"
    hooks = HOOKS[name] = Hooks(listener, on_result)
    try:
        resumed = tune.Tuner.can_restore(path, storage_filesystem=run.storage_filesystem)
        if resumed:
            tuner = _restored_tuner(path, trainable, run)
        else:
            hooks.collector = _make_collector(name, list(dims))
            tuner = _new_tuner(trainable, dims, spec, base.seed, max_t, run, name, storage_path)
        t0 = time.perf_counter()
        # Tune's environment for the fit: its console tables and automatic file loggers
        # off (the listener reports progress; the JSON logger is added in _new_tuner), and
        # an experiment snapshot every 2 s (QUIET_ENV)
        with mock.patch.dict(os.environ, QUIET_ENV):
            tuner.fit()
    finally:
        HOOKS.pop(name, None)
        if own_storage is not None:
            own_storage.cleanup()
    collector = hooks.collector
    trials = sorted(collector.trials.values(), key=lambda t: t.index)
    sizes = [{"train": len(a), "val": len(b)} for a, b in folds]
    return SearchResult(trials, spec, dims, max_t, sizes, time.perf_counter() - t0, resumed)


def _scheduler(spec: TuningSpec, max_t: int) -> TrialScheduler:
    """ASHA over training iterations (one epoch of every fold each), or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=min(spec.grace_period, max_t),
            reduction_factor=spec.reduction_factor,
        )
    return FIFOScheduler()


def _restored_tuner(path: str, trainable: Any, run: SearchRun) -> tune.Tuner:
    """The run's driver died: Tune's snapshot has every trial as it stood, the searcher's
    and ASHA's state; ended trials stay ended, unfinished ones start again, failed ones
    stay failed (their configs diverged: trying again would only diverge again)."""
    from ray import tune

    return tune.Tuner.restore(
        path,
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=False,
        storage_filesystem=run.storage_filesystem,
    )


def _new_tuner(
    trainable: Any,
    dims: dict[str, Any],
    spec: TuningSpec,
    seed: int,
    max_t: int,
    run: SearchRun,
    name: str,
    storage_path: str,
) -> tune.Tuner:
    """A fresh Tuner over the space ``dims``, its run ``name`` under ``storage_path``,
    with the run's collector (``HOOKS[name]``) among its callbacks."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    return tune.Tuner(
        trainable,
        param_space={k: to_tune(d, grid=spec.strategy == "grid") for k, d in dims.items()},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=_scheduler(spec, max_t),
            num_samples=spec.num_samples,
            reuse_actors=True,
            search_alg=searcher(spec, seed),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=run.storage_filesystem,
            # the JSON logger only: Tune's CSV and TensorBoard loggers cannot log
            # the per-fold list (and warn every epoch); result.json is what Tune
            # reads back
            callbacks=[HOOKS[name].collector, JsonLoggerCallback()],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def load_out_of_fold(
    outcome: TrialOutcome, filesystem: Any = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The trial's out-of-fold probabilities, ``(index, probs)`` with ``index`` the job's
    train + val image indices (ascending), or None when it left none (it did not finish
    every fold). ``filesystem`` is the run's storage filesystem
    (``SearchRun.storage_filesystem``: pyarrow's S3 for a store in S3, None on disk). A
    search on its own temporary storage (``SearchRun.storage_path`` None) took its
    checkpoints with it when it ended."""
    if not outcome.oof_checkpoint:
        return None
    from ray import tune

    checkpoint = tune.Checkpoint(outcome.oof_checkpoint, filesystem)
    with checkpoint.as_directory() as folder:
        return read_out_of_fold(folder)


def searcher(spec: TuningSpec, seed: int) -> Any:
    """The search algorithm of ``spec.strategy``, seeded, with the concurrency limit
    (Tune ignores ``max_concurrent_trials`` when it is handed a search algorithm)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if spec.strategy != "tpe":
        return BasicVariantGenerator(random_state=seed, max_concurrent=spec.max_concurrent or 0)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study and trial
    # Optuna's default is 10 random configs before TPE models anything; a small budget
    # would be all random: a quarter of it (at least 2) explores, the rest is TPE's
    startup = max(2, min(10, spec.num_samples // 4))
    tpe = OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        metric=spec.metric,
        mode=spec.mode,
    )
    return ConcurrencyLimiter(tpe, spec.max_concurrent) if spec.max_concurrent else tpe
