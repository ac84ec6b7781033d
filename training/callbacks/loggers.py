"""Callbacks that record a run: a line per epoch, a CSV row per epoch, TensorBoard."""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from training.callbacks.base import Callback


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
