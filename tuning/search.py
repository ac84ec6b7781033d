"""Ray Tune wiring: the search over a space, ASHA, and the collector of every trial.

``run_search`` takes the validated ``TuningSpec`` (tuning.spec: grid and space, search
strategy, folds, sampling, metric, scheduler) and a ``SearchRun`` (each trial's resources,
Tune's storage, the run's name), runs one ``cv_trainable`` per config (tuning.cv: k folds in
lockstep) with ``ASHAScheduler`` (or FIFO), and returns every trial as it ended; the
``listener`` hears each one as it ends (a failed trial is recorded, not raised).

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

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.data import Split
from training.hyperparams import Hyperparameters
from tuning.cv import CVData, cv_folds, cv_trainable
from tuning.grid import max_epochs
from tuning.space import ends, to_tune, validate_space
from tuning.spec import TuningSpec


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

    @property
    def stopped_at(self) -> int:
        """Epochs this config trained (per fold) before it ended."""
        return self.history[-1]["epoch"] if self.history else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "trial_id": self.trial_id,
            "config": self.config,
            "status": self.status,
            "stopped_at": self.stopped_at,
            "max_epochs": self.max_epochs,
            "error": self.error,
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


def _make_collector(
    keys: list[str],
    listener: Callable[[TrialOutcome], None] | None,
    on_result: Callable[[TrialOutcome, dict[str, Any]], None] | None,
):
    """A Tune callback (built here so the module imports without Ray Tune) that keeps
    every trial's reports in the driver and tells ``listener`` when a trial ends."""
    from ray import tune

    class Collector(tune.Callback):
        def __init__(self, keys: list[str], listener: Any, on_result: Any) -> None:
            self.keys, self.listener, self.on_result = keys, listener, on_result
            self.trials: dict[str, TrialOutcome] = {}

        # Tune pickles its callbacks with the experiment state: the listeners (which may
        # hold a database session factory) stay out of it.
        def __getstate__(self) -> dict[str, Any]:
            return {"keys": self.keys, "trials": self.trials}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, listener=None, on_result=None)

        def _get(self, trials: list, trial: Any) -> TrialOutcome:
            t = self.trials.get(trial.trial_id)
            if t is None:
                config = {k: trial.config[k] for k in self.keys if k in trial.config}
                index = next((i for i, x in enumerate(trials) if x is trial), len(self.trials))
                t = TrialOutcome(index, trial.trial_id, config)
                self.trials[trial.trial_id] = t
            return t

        def on_trial_start(self, iteration, trials, trial, **info):
            self._get(trials, trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            t = self._get(trials, trial)
            row = {k: v for k, v in result.items() if k in REPORT_KEYS or k == "folds"}
            t.max_epochs = result.get("max_epochs", t.max_epochs)
            t.history.append(row)
            if self.on_result is not None:
                self.on_result(t, row)

        def _end(self, t: TrialOutcome) -> None:
            if self.listener is not None:
                self.listener(t)

        def on_trial_complete(self, iteration, trials, trial, **info):
            t = self._get(trials, trial)
            if t.status != "running":
                return
            last = t.history[-1] if t.history else {}
            t.status = "completed" if last.get("trial_done") else "stopped_early"
            self._end(t)

        def on_trial_error(self, iteration, trials, trial, **info):
            t = self._get(trials, trial)
            if t.status != "running":
                return
            t.status, t.error = "failed", error_line(trial)
            self._end(t)

    return Collector(keys, listener, on_result)  # no closures: the class is pickled too


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


@contextlib.contextmanager
def _quiet_tune():
    """Tune's console tables and its automatic file loggers off for the fit: the
    listener reports progress, and run_search adds the JSON logger itself."""
    saved = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


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
) -> SearchResult:
    """Run the whole search of ``spec`` on top of ``base`` on the connected Ray cluster;
    every trial ends in the result (a failed trial is recorded, not raised). ``listener``
    hears each trial as it ends, ``on_result`` each report."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    run = run or SearchRun()
    dims = validate_space(spec.dimensions, base)
    epoch_keys = {k: ends(d) for k, d in dims.items() if k in ("phase1_epochs", "phase2_epochs")}
    max_t = max_epochs(epoch_keys, base)
    folds = cv_folds(labels, split, spec.k_folds, base.seed)
    data = CVData(images, labels, list(classes), folds)
    trainable = tune.with_parameters(
        cv_trainable, data=data, base=base.effective(), backbone_state=backbone_state
    )
    trainable = tune.with_resources(trainable, run.resources())
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=min(spec.grace_period, max_t),
            reduction_factor=spec.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    collector = _make_collector(list(dims), listener, on_result)
    own_storage = None
    storage_path = run.storage_path
    if storage_path is None:
        own_storage = tempfile.TemporaryDirectory(prefix="colecionador-tune-")
        storage_path = own_storage.name
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
            name=run.name or f"tune-{int(time.time())}",
            storage_path=storage_path,
            storage_filesystem=run.storage_filesystem,
            # the JSON logger only: Tune's CSV and TensorBoard loggers cannot log the
            # per-fold list (and warn every epoch); result.json is what Tune reads back
            callbacks=[collector, JsonLoggerCallback()],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    t0 = time.perf_counter()
    try:
        with _quiet_tune():
            tuner.fit()
    finally:
        if own_storage is not None:
            own_storage.cleanup()
    trials = sorted(collector.trials.values(), key=lambda t: t.index)
    sizes = [{"train": len(a), "val": len(b)} for a, b in folds]
    return SearchResult(trials, spec, dims, max_t, sizes, time.perf_counter() - t0)


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
