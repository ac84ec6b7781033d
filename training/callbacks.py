"""Keras/Lightning-style callbacks for the training loop.

Each callback is a small class with hooks named for the moment they run (``HOOKS``) and a
``state_dict`` / ``load_state_dict`` so a resumed run restores it. A callback sees the run
through ``RunView`` (``self.run``: the evaluated weights, the optimizer, the epoch, the
rank, ...), not the whole recipe, and talks back only through ``run.stop_training``,
``run.failure`` and ``run.restored_epoch``; the run reduces the stop flag across ranks, so
no worker stops alone. ``CallbackList`` calls the hooks (an unknown hook name is an
AttributeError, never a silent no-op) and saves each stateful callback's state under its
``state_key``. ``Monitor`` is the one "did the monitored figure improve" rule that
EarlyStopping and ModelCheckpoint share.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, get_args, runtime_checkable

import torch
from torch import nn

Mode = Literal["min", "max"]
HOOKS = (
    "on_phase_begin",
    "on_epoch_begin",
    "on_train_batch_end",
    "on_epoch_end",
    "on_phase_end",
    "on_checkpoint",
)


@runtime_checkable
class RunView(Protocol):
    """What a callback may see of the run (training.loop.TwoPhaseRun implements it):
    only what the built-in callbacks use. The last three are the callbacks' way back."""

    @property
    def eval_module(self) -> nn.Module:
        """The weights that are validated, restored and exported (the EMA's when kept)."""

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    @property
    def phase_info(self) -> dict[str, Any]:
        """The phase's trainable layers and parameters (training.model.set_phase)."""

    @property
    def epoch(self) -> int:
        """Epochs done, across phases."""

    @property
    def epoch_in_phase(self) -> int: ...

    @property
    def rank(self) -> int: ...

    def export(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """A model.pt package of the evaluated weights (or of ``state_dict``)."""

    stop_training: bool
    failure: str | None
    restored_epoch: int | None


def check_mode(mode: str) -> Mode:
    """``mode`` as a Literal["min", "max"], or ValueError naming what was given."""
    if mode not in get_args(Mode):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode  # type: ignore[return-value]


@dataclass
class Monitor:
    """The best value so far of one logged figure, and whether a new value beats it by
    more than ``min_delta`` (lower for ``min``, higher for ``max``; Keras and Lightning
    semantics). A missing or NaN value is no value: ``value(logs)`` gives None."""

    monitor: str = "val_loss"
    mode: Mode = "min"
    min_delta: float = 0.0
    best: float = field(init=False)

    def __post_init__(self) -> None:
        self.mode = check_mode(self.mode)
        self.min_delta = abs(self.min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def value(self, logs: dict[str, Any]) -> float | None:
        value = logs.get(self.monitor)
        return None if value is None or math.isnan(value) else float(value)

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class Callback:
    run: RunView

    def set_run(self, run: RunView) -> None:
        self.run = run

    @property
    def state_key(self) -> str:
        """The name this callback's state is saved under (unique within a run's list)."""
        return type(self).__qualname__

    def on_phase_begin(self, phase: int) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_phase_end(self, phase: int) -> None: ...

    def on_checkpoint(self, directory: Path) -> None:
        """Rank 0, before each report: write files into the epoch's checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs, as plain data only (tensors, dicts, lists, numbers,
        strings): checkpoints are loaded with ``torch.load(weights_only=True)``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _stateful(c: Callback) -> bool:
    return type(c).state_dict is not Callback.state_dict


class CallbackList:
    """Calls every callback's hook in order. The hooks are methods here, so a misspelled
    one is an AttributeError; state is saved by ``state_key``, not by position."""

    def __init__(self, callbacks: list[Callback], run: RunView):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_run(run)
        self.keys = self._keys()

    def _keys(self) -> list[str]:
        """Each callback's key; a repeated one gets ``#2``, ``#3``... in list order."""
        seen: dict[str, int] = {}
        keys = []
        for c in self.callbacks:
            key = c.state_key
            seen[key] = seen.get(key, 0) + 1
            keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
        return keys

    def on_phase_begin(self, phase: int) -> None:
        for c in self.callbacks:
            c.on_phase_begin(phase)

    def on_epoch_begin(self, epoch: int) -> None:
        for c in self.callbacks:
            c.on_epoch_begin(epoch)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_phase_end(self, phase: int) -> None:
        for c in self.callbacks:
            c.on_phase_end(phase)

    def on_checkpoint(self, directory: Path) -> None:
        for c in self.callbacks:
            c.on_checkpoint(directory)

    @property
    def wants_batches(self) -> bool:
        return any(
            type(c).on_train_batch_end is not Callback.on_train_batch_end for c in self.callbacks
        )

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{state_key: state}`` of every callback that keeps state."""
        return {k: c.state_dict() for k, c in zip(self.keys, self.callbacks) if _stateful(c)}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        """Restore every stateful callback from its key. A stateful callback without a
        saved state, or a saved state without its callback, means the run's callbacks are
        not the checkpoint's: ValueError naming them."""
        if not isinstance(states, dict):
            raise ValueError(
                "callback state must be a mapping by state_key "
                "(a checkpoint from before states were saved by key)"
            )
        mine = {k: c for k, c in zip(self.keys, self.callbacks) if _stateful(c)}
        missing, unexpected = sorted(set(mine) - set(states)), sorted(set(states) - set(mine))
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint's callbacks differ from this run's: "
                f"no state for {missing or 'none'}, "
                f"state without a callback for {unexpected or 'none'}"
            )
        for key, c in mine.items():
            c.load_state_dict(states[key])


class Monitored(Callback):
    """A callback that watches one figure through ``self.tracker`` (a Monitor): its
    settings and best value read through, and its state saved under its class, the
    figure and the mode (two such callbacks on different figures keep apart)."""

    tracker: Monitor

    @property
    def monitor(self) -> str:
        return self.tracker.monitor

    @property
    def mode(self) -> Mode:
        return self.tracker.mode

    @property
    def min_delta(self) -> float:
        return self.tracker.min_delta

    @property
    def best(self) -> float:
        return self.tracker.best

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.monitor},{self.mode}]"


class EarlyStopping(Monitored):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights`` the best epoch's weights are put back when the
    phase ends (Keras EarlyStopping). ``should_stop`` is the decision alone."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def should_stop(self, value: float) -> tuple[bool, str | None]:
        """Take one epoch's value: (stop?, why). It keeps the best value and the count of
        epochs without improvement, and touches nothing of the run."""
        if self.tracker.improved(value):
            self.tracker.best, self.wait = value, 0
            return False, None
        self.wait += 1
        if self.wait >= self.patience:
            return True, (
                f"{self.monitor} did not improve by more than {self.min_delta:g} "
                f"for {self.wait} epoch(s); best {self.best:.6g}"
            )
        return False, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.tracker.value(logs)
        if value is None:
            return
        improved = self.tracker.improved(value)
        stop, reason = self.should_stop(value)
        if improved:
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = {
                    k: v.detach().cpu().clone()
                    for k, v in self.run.eval_module.state_dict().items()
                }
        if stop:
            self.stopped_epoch, self.stop_reason = epoch, reason
            self.run.stop_training = True

    def on_phase_end(self, phase: int) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.run.eval_module.load_state_dict(self.best_weights)
            self.run.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.stop_reason = state.get("stop_reason")
        self.best_weights = state["best_weights"]


class TerminateOnNaN(Callback):
    """Stop, and mark the run failed, when the training loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.run.stop_training = True
            self.run.failure = f"loss became {loss} at epoch {epoch}"


class ProgressLogger(Callback):
    """One line per epoch on rank 0: phase, epoch, loss, accuracy, val figures, lr, time."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def on_phase_begin(self, phase: int) -> None:
        if self.run.rank == 0:
            info = self.run.phase_info
            self._print(
                f"phase {phase}: {info['unfrozen_layers']} of {info['backbone_layers']}"
                f" backbone layers trainable, {info['trainable_params']:,} parameters,"
                f" lr {self.run.optimizer.param_groups[0]['lr']:.2g}"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.run.rank == 0:
            self._print(
                f"epoch {epoch:3d} (phase {logs['phase']}) loss {logs['loss']:.4f}"
                f" acc {logs['accuracy']:.4f} val_loss {logs['val_loss']:.4f}"
                f" val_acc {logs['val_accuracy']:.4f} lr {logs['lr']:.2g}"
                f" {logs['epoch_time_s']:.1f}s"
                + (
                    f" ({logs['images_per_s']:.0f} img/s, waiting for data "
                    f"{100 * logs['data_wait']:.0f} %)"
                    if "data_wait" in logs
                    else ""
                )
            )

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)


class ModelCheckpoint(Monitored):
    """Keep the best weights by ``monitor`` and write them into each reported checkpoint
    as ``best.pt`` (a model.pt package); with ``every_epoch`` also the epoch's own
    weights as ``epoch.pt``. (Every epoch's full training state is checkpointed anyway.)"""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "min",
        save_best_only: bool = True,
        every_epoch: bool = False,
        min_delta: float = 0.0,
    ):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.save_best_only, self.every_epoch = save_best_only, every_epoch
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.tracker.value(logs)
        if value is None:
            return
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch = value, epoch
            self.best_weights = {
                k: v.detach().cpu().clone() for k, v in self.run.eval_module.state_dict().items()
            }

    def on_checkpoint(self, directory: Path) -> None:
        if self.best_weights is not None:
            torch.save(
                {
                    **self.run.export(self.best_weights),
                    "epoch": self.best_epoch,
                    self.monitor: self.best,
                },
                directory / "best.pt",
            )
        if self.every_epoch or not self.save_best_only:
            torch.save({**self.run.export(), "epoch": self.run.epoch}, directory / "epoch.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_weights = state["best_weights"]


class CSVLogger(Callback):
    """One CSV row per epoch (Keras CSVLogger): written into every checkpoint as
    ``filename`` and, on rank 0, to ``path`` when one is given."""

    def __init__(
        self, filename: str = "history.csv", path: str | None = None, separator: str = ","
    ):
        self.filename, self.path, self.separator = filename, path, separator
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.rows.append(dict(logs))
        if self.path and self.run.rank == 0:
            self._write(Path(self.path))

    def _write(self, target: Path) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, delimiter=self.separator)
            w.writeheader()
            w.writerows(self.rows)

    def on_checkpoint(self, directory: Path) -> None:
        if self.rows:
            self._write(directory / self.filename)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


class LearningRateScheduler(Callback):
    """Keras LearningRateScheduler: ``schedule(epoch_in_phase, lr) -> lr`` (a callable or
    an import path ``package.module:function``) sets the lr at the start of every epoch;
    pair it with ``schedule=none``."""

    def __init__(self, schedule: Callable[[int, float], float] | str):
        if isinstance(schedule, str):
            from training.losses import import_callable

            schedule = import_callable(schedule)
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int) -> None:
        opt = self.run.optimizer
        lr = float(self.schedule(self.run.epoch_in_phase - 1, opt.param_groups[0]["lr"]))
        for g in opt.param_groups:
            g["lr"] = lr


class LearningRateMonitor(Callback):
    """Lightning's LearningRateMonitor: the lr of every parameter group, each epoch or
    each optimizer step, added to the epoch's logs (``lr-group<i>``, ``lr-steps``)."""

    def __init__(self, logging_interval: str = "epoch"):
        if logging_interval not in ("epoch", "step"):
            raise ValueError("logging_interval must be 'epoch' or 'step'")
        self.logging_interval = logging_interval
        self.steps: list[float] = []
        self.history: list[list[float]] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.steps = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        if self.logging_interval == "step":
            self.steps.append(self.run.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        groups = [g["lr"] for g in self.run.optimizer.param_groups]
        self.history.append(groups)
        for i, lr in enumerate(groups):
            logs[f"lr-group{i}"] = lr
        if self.logging_interval == "step":
            logs["lr-steps"] = list(self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = state["history"]


class TensorBoard(Callback):
    """Scalars per epoch (loss, accuracy, val figures, lr) as TensorBoard event files
    (tensorboardX), on rank 0, in ``log_dir`` and copied into every checkpoint under
    ``tensorboard/``."""

    def __init__(self, log_dir: str | None = None):
        self.log_dir = log_dir
        self._writer: Any = None  # a tensorboardX SummaryWriter (tensorboardX has no types)

    def _open(self) -> Any:
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self.log_dir = self.log_dir or tempfile.mkdtemp(prefix="colecionador-tb-")
            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.run.rank != 0:
            return
        w = self._open()
        for key, value in logs.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "phase"):
                w.add_scalar(key, value, epoch)
        w.flush()

    def on_checkpoint(self, directory: Path) -> None:
        if self._writer is not None:
            self._writer.flush()
            assert self.log_dir is not None  # _open set it with the writer
            shutil.copytree(self.log_dir, directory / "tensorboard", dirs_exist_ok=True)


class LambdaCallback(Callback):
    """Keras LambdaCallback: any hook as a plain function (or an import path to one)."""

    HOOKS = HOOKS

    def __init__(self, **hooks: Callable[..., None] | str):
        unknown = set(hooks) - set(self.HOOKS)
        if unknown:
            raise ValueError(f"unknown hook(s): {', '.join(sorted(unknown))}")
        from training.losses import import_callable

        for name, fn in hooks.items():
            setattr(self, name, import_callable(fn) if isinstance(fn, str) else fn)


BUILTIN = {
    c.__name__: c
    for c in (
        EarlyStopping,
        TerminateOnNaN,
        ProgressLogger,
        ModelCheckpoint,
        CSVLogger,
        LearningRateScheduler,
        LearningRateMonitor,
        TensorBoard,
        LambdaCallback,
    )
}


def build_callbacks(specs: list[str | dict[str, Any]]) -> list[Callback]:
    """Callbacks from the ``callbacks`` hyperparameter: a built-in name (``CSVLogger``)
    or an import path (``package.module:Class``), alone or as ``{"name": ..., **kwargs}``."""
    from training.losses import import_callable

    out = []
    for spec in specs:
        name, kwargs = (
            (spec, {})
            if isinstance(spec, str)
            else (spec["name"], {k: v for k, v in spec.items() if k != "name"})
        )
        cls = BUILTIN.get(name) or import_callable(name)
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise ValueError(f"callback {name} is not a training.callbacks.Callback")
        try:
            out.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ValueError(f"callback {name}: {e}") from None
    return out
