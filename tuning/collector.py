"""The collector of every trial of a search: ``TrialOutcome`` (one trial as it ended),
the Tune callback that keeps every trial's reports in the driver and tells the run's
listener when a trial ends (``_make_collector``), and the hooks of the searches running
in this process (``HOOKS``), which a restored Tuner's collector finds by run name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuning.report import TrialStatus

RUNNING = "running"  # a trial not yet ended (only in this collector, never stored)

if TYPE_CHECKING:
    from ray import tune


@dataclass
class TrialOutcome:
    """One trial as it ended: its config, how it ended and every epoch it reported."""

    index: int
    trial_id: str
    config: dict[str, Any]
    status: str = RUNNING  # then a TrialStatus
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


class CollectorMethods:
    """The collector's state and hooks, on a plain class so that they are pickled by
    reference; ``_make_collector`` puts them on Tune's Callback."""

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
        # a module-level class is pickled by reference: HOOKS is the live dict here
        return HOOKS.get(self.name) or Hooks()

    def get_state(self) -> dict[str, Any]:  # Tune is writing a snapshot
        self.snapshotted += self.ended
        self.ended = []
        return {"trials": {k: t.to_dict() for k, t in self.trials.items()}}

    def set_state(self, state: dict[str, Any]) -> None:  # a restored run
        self.trials = {k: TrialOutcome.from_dict(d) for k, d in state["trials"].items()}
        for t in self.trials.values():
            if t.status == RUNNING:  # Tune starts it again, from its first epoch
                t.history, t.oof_checkpoint = [], None

    def _get(self, trials: list[Any], trial: Any) -> TrialOutcome:
        t = self.trials.get(trial.trial_id)
        if t is None:
            config = {k: trial.config[k] for k in self.keys if k in trial.config}
            index = next((i for i, x in enumerate(trials) if x is trial), len(self.trials))
            t = TrialOutcome(index, trial.trial_id, config)
            self.trials[trial.trial_id] = t
        return t

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
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

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        t = self._get(trials, trial)
        if t.status != RUNNING:
            return
        last = t.history[-1] if t.history else {}
        t.status = TrialStatus.COMPLETED if last.get("trial_done") else TrialStatus.STOPPED_EARLY
        self.ended.append(t)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        t = self._get(trials, trial)
        if t.status != RUNNING:
            return
        t.status, t.error = TrialStatus.FAILED, error_line(trial)
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


def _make_collector(name: str, keys: list[str]) -> tune.Callback:
    """A Tune callback (built here so the module imports without Ray Tune) that keeps
    every trial's reports in the driver and tells the run's listener when a trial ends.

    A trial's end is told only once Tune has written an experiment snapshot that holds
    it as ended (Tune asks the callbacks for their state while it writes one, and calls
    ``on_step_end`` after): whatever a listener has recorded, a restored run will not
    train again. The collected trials are part of that snapshot (``get_state``), so a
    restored run reports the trials that ended before its driver died."""
    from ray import tune

    class Collector(CollectorMethods, tune.Callback):
        """The collector's methods (CollectorMethods) as a Tune callback."""

    return Collector(name, keys)  # no closures: the class is pickled too
