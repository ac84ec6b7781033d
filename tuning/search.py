"""Grid search with k-fold cross-validation inside each Ray Tune trial, and ASHA.

The search space is a grid over hyperparameter names (``--grid key=v1,v2`` or the
message's ``tuning.grid``), validated like ``--set``: unknown names, ill-typed values and
combinations the recipe rejects are errors. ``num_samples`` 1 searches the whole grid
(``tune.grid_search`` per key); ``num_samples`` N > 1 is a random search: N configs, each
key drawn from its values (``tune.choice``), seeded.

A trial is a plain Tune function trainable, run in-process: it trains its config on k
stratified folds of train + val (the test split is never in a fold) with k ``TwoPhaseRun``
objects, the same recipe a train job runs, stepped in lockstep, one epoch of every fold per
iteration. Each iteration reports the mean and std over folds of val_loss and val_accuracy
(and every fold's own figures) with ``ray.tune.report``, so ``ASHAScheduler`` stops weak
configs early on the cross-validated estimate, not on one split's noise.

Why not a TorchTrainer per trial (Ray's Tune + Train V2 pattern): it hung here with
``WorkerGroupStartupTimeoutError`` (notes/stack.md). The cause is a resource deadlock: each
trial's driver holds 1 CPU of the trial's bundle, so N concurrent trials on N CPUs leave
none for the trainers' worker placement groups. It runs when the drivers leave room
(``max_concurrent_trials=1`` on 2 CPUs, or a token bundle ``{"cpu": 0.01}``; ``{"cpu": 0}``
is refused as empty), but every trial then pays Ray Train's ~20 s worker-group start-up
and k folds would need k trainers. A trial here is one process with its own resources
(1 CPU, or 1 CPU + 1 GPU), and trials run in parallel across the cluster.

This module imports training/, never services/: results go to whoever passes a listener.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from pydantic import ValidationError

from training.data import Split, kfold
from training.hyperparams import Hyperparameters, parse_assignment, validation_message
from training.loop import TrainData, TwoPhaseRun, WorkerInfo
from tuning.report import MODES

# Names a grid may not vary: the search must compare configs on the same data, folds and
# held-out test split, and the final model is judged once, by the job's own gate.
NOT_TUNABLE = {
    "image_size": "images are decoded once, at the job's image_size",
    "weights": "the starting weights are loaded once for the whole search",
    "seed": "the seed fixes the split and the folds, the same for every config",
    "val_frac": "the split is fixed for the whole search",
    "test_frac": "the split is fixed for the whole search (the test split stays held out)",
    "val_max": "the split is fixed for the whole search",
    "test_max": "the split is fixed for the whole search (the test split stays held out)",
    "min_per_class": "the data is checked once, before the search",
    "on_bad_image": "the data is checked once, before the search",
    "gate_accuracy": "the gate judges the final model only",
    "gate_precision": "the gate judges the final model only",
    "gate_recall": "the gate judges the final model only",
}
MAX_GRID = 10_000  # configs a grid may expand to


# ------------------------------------------------------------------ the grid
def _split_values(raw: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas: ``[3,6],[5,10]`` is two values."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_grid(assignments: Iterable[str]) -> dict[str, list[Any]]:
    """``["phase1_lr=1e-3,1e-2", "optimizer=adam,sgd"]`` -> ``{name: [values]}``.

    Each value is read like a ``--set`` value (JSON, ``true``/``false``, ``none``, or a
    string); a list-valued name takes JSON lists: ``milestones=[3,6],[5,10]``. Unknown
    names, a name given twice, and empty values are errors (ValueError, one line). The
    values are checked against the recipe by :func:`validate_grid`.
    """
    grid: dict[str, list[Any]] = {}
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"--grid expects key=v1,v2,..., got {text!r}")
        key, raw = (p.strip() for p in text.split("=", 1))
        if key in grid:
            raise ValueError(f"grid key {key!r} given twice; list its values once: "
                             f"{key}=v1,v2")
        values = []
        for piece in _split_values(raw):
            if not piece:
                raise ValueError(f"grid {key}: empty value in {raw!r}")
            _, value = parse_assignment(f"{key}={piece}")  # unknown names raise here
            values.append(value)
        grid[key] = values
    return grid


def validate_grid(grid: Mapping[str, Sequence[Any]],
                  base: Hyperparameters | Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
    """Check a grid against the recipe and return it with each value as the recipe reads
    it (``"1e-3"`` -> 0.001). Every value is validated on top of ``base`` (like ``--set``)
    and so is every combination (e.g. phase1_epochs=0 with phase2_epochs=0)."""
    base_values = (base.effective() if isinstance(base, Hyperparameters)
                   else dict(base or {}))
    clean: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if key not in Hyperparameters.model_fields:
            raise ValueError(f"unknown hyperparameter {key!r} in grid")
        if key in NOT_TUNABLE:
            raise ValueError(f"grid: {key} cannot be tuned: {NOT_TUNABLE[key]}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"grid {key}: expected a list of values, got {values!r}")
        if not values:
            raise ValueError(f"grid {key}: no values")
        out = []
        for v in values:
            try:
                hp = Hyperparameters(**{**base_values, key: v})
            except ValidationError as e:
                raise ValueError(f"grid {key}={v!r}: {validation_message(e)}") from None
            coerced = hp.effective()[key]
            if coerced in out:
                raise ValueError(f"grid {key}: value {v!r} given twice")
            out.append(coerced)
        clean[key] = out
    size = math.prod(len(v) for v in clean.values())
    if size > MAX_GRID:
        raise ValueError(f"grid expands to {size} configs; at most {MAX_GRID}")
    for config in expand_grid(clean):
        try:
            Hyperparameters(**{**base_values, **config})
        except ValidationError as e:
            raise ValueError(f"grid config {config}: {validation_message(e)}") from None
    return clean


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every config of the grid (``itertools.product`` order: for sizes, bounds and
    checks; Tune makes the same set of trials, in its own order)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def search_space(grid: Mapping[str, Sequence[Any]], num_samples: int = 1) -> dict[str, Any]:
    """Tune's param_space: ``tune.grid_search`` per key, or ``tune.choice`` per key for a
    random search of ``num_samples`` > 1 configs."""
    from ray import tune
    if num_samples <= 1:
        return {k: tune.grid_search(list(v)) for k, v in grid.items()}
    return {k: tune.choice(list(v)) for k, v in grid.items()}


def total_epochs(hp: Hyperparameters) -> int:
    return hp.phase1_epochs + hp.phase2_epochs


def max_epochs(grid: Mapping[str, Sequence[Any]], base: Hyperparameters) -> int:
    """The longest config's epochs: ASHA's max_t."""
    values = base.effective()
    return max(total_epochs(Hyperparameters(**{**values, **c})) for c in expand_grid(grid))


# --------------------------------------------------------------- the folds
def cv_folds(labels: np.ndarray, split: Split, k: int,
             seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
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
        raise ValueError(f"k_folds={k} needs at least {k} images of every class in train + "
                         f"val; class index {i} has {counts[i]}")
    return kfold(labels, pool, k, seed)


@dataclass
class CVData:
    """What every trial shares (through the object store): decoded images and the folds."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]

    def fold(self, i: int) -> TrainData:
        train, val = self.folds[i]
        return TrainData(self.images, self.labels, train, val, self.classes)


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

    def __init__(self, hp: Hyperparameters, data: CVData, *,
                 backbone_state: dict[str, torch.Tensor] | None = None,
                 device: torch.device | None = None, quiet: bool = True):
        self.hp = hp
        worker = WorkerInfo(device=device or torch.device("cpu"))
        self.runs = [TwoPhaseRun(hp, data.fold(i), worker=worker,
                                 backbone_state=backbone_state, quiet=quiet)
                     for i in range(len(data.folds))]
        self.iteration = 0
        self.max_epochs = total_epochs(hp)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.runs)

    @property
    def failure(self) -> str | None:
        return next((f"fold {i} diverged: {r.failure}" for i, r in enumerate(self.runs)
                     if r.failure), None)

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

    def report(self, ran: list[bool] | None = None) -> dict[str, Any]:
        ran = ran or [True] * len(self.runs)
        folds = []
        for i, (r, did) in enumerate(zip(self.runs, ran)):
            s = self.standing(r)
            folds.append({"fold": i, "epoch": r.epoch, "phase": s["phase"],
                          "standing_epoch": s["epoch"], "ran": did, "done": r.done,
                          **{k: float(s[k]) for k in ("loss", "accuracy", "val_loss",
                                                       "val_accuracy", "lr")}})
        return aggregate(self.iteration, folds, done=self.done,
                         max_epochs=self.max_epochs)


def aggregate(iteration: int, folds: list[dict[str, Any]], *, done: bool,
              max_epochs: int) -> dict[str, Any]:
    """One iteration's report: mean and std over folds of each figure, and the folds."""
    out: dict[str, Any] = {"epoch": iteration, "max_epochs": max_epochs,
                           "phase": max(f["phase"] for f in folds if f["ran"]) if any(
                               f["ran"] for f in folds) else folds[0]["phase"],
                           "folds_done": sum(f["done"] for f in folds), "trial_done": done}
    for k in ("val_loss", "val_accuracy", "loss", "accuracy"):
        out[k], out[f"{k}_std"] = _mean_std([f[k] for f in folds])
    out["folds"] = folds
    return out


# --------------------------------------------------------------- the trial
def cv_trainable(config: dict[str, Any], *, data: CVData, base: dict[str, Any],
                 backbone_state: dict[str, torch.Tensor] | None = None) -> None:
    """The Tune function trainable: one config, k folds in lockstep, a report per epoch."""
    import ray
    from ray import tune

    hp = Hyperparameters(**{**base, **config})
    resources = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    device = torch.device("cuda") if resources.get("GPU") and torch.cuda.is_available() \
        else torch.device("cpu")
    cv = FoldsInLockstep(hp, data, backbone_state=backbone_state, device=device, quiet=True)
    while not cv.done:
        report = cv.step()
        tune.report(report)  # NaN stays NaN here (ASHA ignores it); a diverged fold ends
        if cv.failure:       # the trial as failed right after the epoch is on record
            raise RuntimeError(cv.failure)


# ----------------------------------------------------------- collecting results
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
        return {"index": self.index, "trial_id": self.trial_id, "config": self.config,
                "status": self.status, "stopped_at": self.stopped_at,
                "max_epochs": self.max_epochs, "error": self.error,
                "history": self.history}


def _error_line(trial: Any) -> str:
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
    line = next((ln for ln in reversed(lines) if ":" in ln and not ln.startswith("File ")),
                lines[-1] if lines else "the trial failed")
    return line[:500]


def _make_collector(keys: list[str], listener: Callable[[TrialOutcome], None] | None,
                    on_result: Callable[[TrialOutcome, dict[str, Any]], None] | None):
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
                index = next((i for i, x in enumerate(trials) if x is trial),
                             len(self.trials))
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
            t.status, t.error = "failed", _error_line(trial)
            self._end(t)

    return Collector(keys, listener, on_result)  # no closures: the class is pickled too


REPORT_KEYS = ("epoch", "phase", "max_epochs", "folds_done", "trial_done", "val_loss",
               "val_loss_std", "val_accuracy", "val_accuracy_std", "loss", "loss_std",
               "accuracy", "accuracy_std")


# ------------------------------------------------------------------- the search
@dataclass
class SearchSettings:
    """How to search: folds, sampling, the scheduler and each trial's resources."""

    k_folds: int = 5
    num_samples: int = 1
    metric: str = "val_loss"
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    storage_path: str | None = None
    storage_filesystem: Any = None
    name: str | None = None

    @property
    def mode(self) -> str:
        return MODES[self.metric]

    def check(self) -> None:
        if self.metric not in MODES:
            raise ValueError(f"metric must be one of {', '.join(MODES)}")
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError("scheduler must be asha or fifo")
        if self.k_folds < 2:
            raise ValueError("k_folds must be at least 2")
        if self.num_samples < 1:
            raise ValueError("num_samples must be at least 1")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ValueError("grace_period must be >= 1 and reduction_factor > 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if self.cpus_per_trial <= 0:
            raise ValueError("a trial needs at least some CPU (Tune rejects an empty bundle)")

    def resources(self) -> dict[str, float]:
        res = {"cpu": self.cpus_per_trial}
        if self.gpus_per_trial:
            res["gpu"] = self.gpus_per_trial
        return res


@dataclass
class SearchResult:
    trials: list[TrialOutcome]
    settings: SearchSettings
    grid: dict[str, list[Any]]
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
        return sum(sum(1 for h in t.history for f in h.get("folds", []) if f.get("ran"))
                   for t in self.trials)


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


def run_search(images: np.ndarray, labels: np.ndarray, classes: list[str], split: Split,
               base: Hyperparameters, grid: Mapping[str, Sequence[Any]],
               settings: SearchSettings, *,
               backbone_state: dict[str, torch.Tensor] | None = None,
               listener: Callable[[TrialOutcome], None] | None = None,
               on_result: Callable[[TrialOutcome, dict[str, Any]], None] | None = None,
               ) -> SearchResult:
    """Run the whole search on the connected Ray cluster; every trial ends in the result
    (a failed trial is recorded, not raised). ``listener`` hears each trial as it ends."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    settings.check()
    grid = validate_grid(grid, base)
    max_t = max_epochs(grid, base)
    folds = cv_folds(labels, split, settings.k_folds, base.seed)
    data = CVData(images, labels, list(classes), folds)
    trainable = tune.with_parameters(cv_trainable, data=data, base=base.effective(),
                                     backbone_state=backbone_state)
    trainable = tune.with_resources(trainable, settings.resources())
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                  grace_period=min(settings.grace_period, max_t),
                                  reduction_factor=settings.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    collector = _make_collector(list(grid), listener, on_result)
    own_storage = None
    storage_path = settings.storage_path
    if storage_path is None:
        own_storage = tempfile.TemporaryDirectory(prefix="colecionador-tune-")
        storage_path = own_storage.name
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(grid, settings.num_samples),
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, scheduler=scheduler,
            num_samples=settings.num_samples, reuse_actors=True,
            # the concurrency limit goes to the generator: Tune ignores
            # max_concurrent_trials when it is handed a search generator
            search_alg=BasicVariantGenerator(random_state=base.seed,
                                             max_concurrent=settings.max_concurrent or 0)),
        run_config=tune.RunConfig(
            name=settings.name or f"tune-{int(time.time())}", storage_path=storage_path,
            storage_filesystem=settings.storage_filesystem,
            # the JSON logger only: Tune's CSV and TensorBoard loggers cannot log the
            # per-fold list (and warn every epoch); result.json is what Tune reads back
            callbacks=[collector, JsonLoggerCallback()],
            verbose=0, failure_config=tune.FailureConfig(max_failures=0)),
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
    return SearchResult(trials, settings, grid, max_t, sizes, time.perf_counter() - t0)
