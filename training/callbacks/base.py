"""The callback protocol: the hook names, what a callback sees of the run (``RunView``),
the ``Callback`` base class, and ``CallbackList``, which calls the hooks and saves each
stateful callback's state under its ``state_key``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

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
