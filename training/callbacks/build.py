"""Callbacks from the ``callbacks`` hyperparameter: the built-ins by name (``BUILTIN``),
LambdaCallback (any hook as a plain function), or an import path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.callbacks.base import HOOKS, Callback
from training.callbacks.checkpoint import ModelCheckpoint
from training.callbacks.learning_rate import LearningRateMonitor, LearningRateScheduler
from training.callbacks.loggers import CSVLogger, ProgressLogger, TensorBoard
from training.callbacks.stopping import EarlyStopping, TerminateOnNaN


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
