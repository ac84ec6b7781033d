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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import torch

from training.data import Split
from training.hyperparams import Hyperparameters
from tuning.cv import CVData, cv_folds, cv_trainable, read_out_of_fold
from tuning.grid import max_epochs
from tuning.space import ends, to_tune, validate_space
from tuning.spec import TuningSpec

if TYPE_CHECKING:
    from ray import tune
    from ray.tune.schedulers import TrialScheduler


@dataclass
class TrialOutcome:
    """One trial as it ended: its config, how it ended and every epoch it reported."""

    index: int
    trial_id: str
    config: dict[str, Any]
    status: str = "running"  # completed | stopped_early | failed
    history: list[dict[str, Any]] = field(default_factory=list)  # one report per epoch
    max_epochs: int | None = None
    error: str | None = None
    # where its out-of-fold probabilities are (a Tune checkpoint in the run's storage):
    # only a trial that finished every fold has them
    oof_checkpoint: str | None = None

    @property
    def stopped_at(self) -> int:
        """Epochs this config trained (per fold) before it ended."""
        return self.history[-1]["epoch"] if self.history else 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialOutcome:
        return cls(
            d["index"],
            d["trial_id"],
            d["config"],
            d["status"],
            list(d["history"]),
            d.get("max_epochs"),
            d.get("error"),
            d.get("oof_checkpoint"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "trial_id": self.trial_id,
            "config": self.config,
            "status": self.status,
            "stopped_at": self.stopped_at,
            "max_epochs": self.max_epochs,
            "error": self.error,
            "oof_checkpoint": self.oof_checkpoint,
            "history": self.history,
        }


def error_line(trial: Any) -> str:
    """The trial's exception in one line, e.g. ``RuntimeError: fold 1 diverged: ...``.

    Tune writes the error next to the driver (``trial.pickled_error_file``,
    ``trial.error_file``) before it calls the callbacks, and syncs it to storage later."""
    text = None
    try:
        path = trial.pickled_error_file
        if path and os.path.exists(path):
            import cloudpickle

            with open(path, "rb") as f:
                err = cloudpickle.load(f)
            cause = getattr(err, "cause", None) or err
            text = f"{type(cause).__name__}: {cause}"
    except Exception:  # noqa: BLE001 - fall back to the text trace
        text = None
    if not text:
        try:
            path = trial.error_file
            if path and os.path.exists(path):
                with open(path) as f:
                    text = f.read()
            else:
                text = trial.get_error()
        except Exception:  # noqa: BLE001
            text = None
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    if len(lines) == 1:
        return lines[0][:500]
    # a traceback's last line is the exception itself ("RuntimeError: fold 1 diverged...")
    line = next(
        (ln for ln in reversed(lines) if ":" in ln and not ln.startswith("File ")),
        lines[-1] if lines else "the trial failed",
    )
    return line[:500]


@dataclass
class Hooks:
    """What a search running in this process tells, and the collector Tune calls."""

    listener: Callable[[TrialOutcome], None] | None = None
    on_result: Callable[[TrialOutcome, dict[str, Any]], None] | None = None
    collector: Any = None


# The searches running in this process, by run name: a restored Tuner unpickles its
# Collector from the run's storage (tuner.pkl), and that one finds its hooks here.
HOOKS: dict[str, Hooks] = {}


def _make_collector(name: str, keys: list[str]) -> tune.Callback:
    """A Tune callback (built here so the module imports without Ray Tune) that keeps
    every trial's reports in the driver and tells the run's listener when a trial ends.

    A trial's end is told only once Tune has written an experiment snapshot that holds
    it as ended (Tune asks the callbacks for their state while it writes one, and calls
    ``on_step_end`` after): whatever a listener has recorded, a restored run will not
    train again. The collected trials are part of that snapshot (``get_state``), so a
    restored run reports the trials that ended before its driver died."""
    from ray import tune

    class Collector(tune.Callback):
        def __init__(self, name: str, keys: list[str]) -> None:
            self.name, self.keys = name, keys
            self.trials: dict[str, TrialOutcome] = {}
            self.ended: list[TrialOutcome] = []  # ended, not yet in a snapshot
            self.snapshotted: list[TrialOutcome] = []  # in a snapshot, not yet told

        # Tune pickles its callbacks with the Tuner (tuner.pkl): the listeners (which
        # may hold a database session factory) stay out of it.
        def __getstate__(self) -> dict[str, Any]:
            return {"name": self.name, "keys": self.keys, "trials": self.trials}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, ended=[], snapshotted=[])
            hooks = self._hooks()
            if hooks.collector is None:
                hooks.collector = self  # the one a restored Tuner calls

        def _hooks(self) -> Hooks:
            from tuning import search  # the live module, not a pickled copy of its dict

            return search.HOOKS.get(self.name) or search.Hooks()

        def get_state(self) -> dict[str, Any]:  # Tune is writing a snapshot
            self.snapshotted += self.ended
            self.ended = []
            return {"trials": {k: t.to_dict() for k, t in self.trials.items()}}

        def set_state(self, state: dict[str, Any]) -> None:  # a restored run
            self.trials = {k: TrialOutcome.from_dict(d) for k, d in state["trials"].items()}
            for t in self.trials.values():
                if t.status == "running":  # Tune starts it again, from its first epoch
                    t.history, t.oof_checkpoint = [], None

        def _get(self, trials: list[Any], trial: Any) -> TrialOutcome:
            t = self.trials.get(trial.trial_id)
            if t is None:
                config = {k: trial.config[k] for k in self.keys if k in trial.config}
                index = next((i for i, x in enumerate(trials) if x is trial), len(self.trials))
                t = TrialOutcome(index, trial.trial_id, config)
                self.trials[trial.trial_id] = t
            return t

        def on_trial_start(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            self._get(trials, trial)

        def on_trial_result(
            self,
            iteration: int,
            trials: list[Any],
            trial: Any,
            result: dict[str, Any],
            **info: Any,
        ) -> None:
            t = self._get(trials, trial)
            row = {k: v for k, v in result.items() if k in REPORT_KEYS or k == "folds"}
            t.max_epochs = result.get("max_epochs", t.max_epochs)
            # a trial started again (after a restore) reports from its first epoch
            t.history = [h for h in t.history if h["epoch"] < row.get("epoch", 0)]
            t.history.append(row)
            on_result = self._hooks().on_result
            if on_result is not None:
                on_result(t, row)

        def on_checkpoint(
            self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
        ) -> None:
            # the only checkpoint a trial saves: its out-of-fold probabilities (tuning.cv)
            self._get(trials, trial).oof_checkpoint = checkpoint.path

        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            t = self._get(trials, trial)
            if t.status != "running":
                return
            last = t.history[-1] if t.history else {}
            t.status = "completed" if last.get("trial_done") else "stopped_early"
            self.ended.append(t)

        def on_trial_error(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            t = self._get(trials, trial)
            if t.status != "running":
                return
            t.status, t.error = "failed", error_line(trial)
            self.ended.append(t)

        def _tell(self, ended: list[TrialOutcome]) -> None:
            listener = self._hooks().listener
            for t in ended:
                if listener is not None:
                    listener(t)

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            told, self.snapshotted = self.snapshotted, []
            self._tell(told)

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            told, self.snapshotted, self.ended = self.snapshotted + self.ended, [], []
            self._tell(told)

    return Collector(name, keys)  # no closures: the class is pickled too


REPORT_KEYS = (
    "epoch",
    "phase",
    "max_epochs",
    "folds_done",
    "trial_done",
    "val_loss",
    "val_loss_std",
    "val_accuracy",
    "val_accuracy_std",
    "loss",
    "loss_std",
    "accuracy",
    "accuracy_std",
)


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
) -> SearchResult:
    """Run the whole search of ``spec`` on top of ``base`` on the connected Ray cluster;
    every trial ends in the result (a failed trial is recorded, not raised). ``listener``
    hears each trial as it ends, ``on_result`` each report. ``shards``: the decoded
    shards behind lazy ``images`` (training.shards.ShardSet): every fold streams them."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    run = run or SearchRun()
    dims = validate_space(spec.dimensions, base)
    epoch_keys = {k: ends(d) for k, d in dims.items() if k in ("phase1_epochs", "phase2_epochs")}
    max_t = max_epochs(epoch_keys, base)
    folds = cv_folds(labels, split, spec.k_folds, base.seed)
    data = CVData(images, labels, list(classes), folds, shards=shards)
    trainable = tune.with_parameters(
        cv_trainable, data=data, base=base.effective(), backbone_state=backbone_state
    )
    trainable = tune.with_resources(trainable, run.resources())
    scheduler: TrialScheduler
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=min(spec.grace_period, max_t),
            reduction_factor=spec.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
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
            # the run's driver died: Tune's snapshot has every trial as it stood, the
            # searcher's and ASHA's state; ended trials stay ended, unfinished ones start
            # again, failed ones stay failed (their configs diverged: trying again would
            # only diverge again)
            tuner = tune.Tuner.restore(
                path,
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                storage_filesystem=run.storage_filesystem,
            )
        else:
            hooks.collector = _make_collector(name, list(dims))
            tuner = tune.Tuner(
                trainable,
                param_space={k: to_tune(d, grid=spec.strategy == "grid") for k, d in dims.items()},
                tune_config=tune.TuneConfig(
                    metric=spec.metric,
                    mode=spec.mode,
                    scheduler=scheduler,
                    num_samples=spec.num_samples,
                    reuse_actors=True,
                    search_alg=searcher(spec, base.seed),
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=storage_path,
                    storage_filesystem=run.storage_filesystem,
                    # the JSON logger only: Tune's CSV and TensorBoard loggers cannot log
                    # the per-fold list (and warn every epoch); result.json is what Tune
                    # reads back
                    callbacks=[hooks.collector, JsonLoggerCallback()],
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
        t0 = time.perf_counter()
        # Tune's environment for the fit: its console tables and automatic file loggers
        # off (the listener reports progress; the JSON logger is added above), and an
        # experiment snapshot every 2 s (QUIET_ENV)
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
