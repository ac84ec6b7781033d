"""The two-phase training recipe, one epoch at a time.

``TwoPhaseRun`` is the recipe: phase 1 trains a new head on a frozen backbone, phase 2
unfreezes the last N backbone layers at a low lr with EarlyStopping (restore best) and the
schedule (ReduceLROnPlateau by default). It is stepped with ``run_epoch()`` so the same code
serves a Ray Train worker (training.ray_worker), a Tune trial (k folds in lockstep,
tuning.cv) and a plain process; its ``state_dict`` holds everything a resumed run needs
(phase, epoch, model, optimizer, schedule, callbacks, EMA, RNG).

Here too: the all-reduce helpers that make every rank see the same epoch figures and the
same stop decision. The optimizer and autocast choices are in training.optim; datasets,
samplers and loaders in training.loaders; sessions and checkpoint files in
training.ray_worker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.callbacks import (
    Callback,
    CallbackList,
    EarlyStopping,
    ProgressLogger,
    TerminateOnNaN,
    build_callbacks,
)
from training.hyperparams import Hyperparameters
from training.loaders import ArrayBatches, Timed, with_last
from training.losses import build_loss
from training.model import (
    build_model,
    export_model,
    load_backbone_weights,
    set_phase,
    train_mode,
    trainable_parameters,
)
from training.optim import make_optimizer, resolve_amp
from training.schedules import EpochSchedule

if TYPE_CHECKING:
    from training.shards import ShardImages


@dataclass
class TrainData:
    """Decoded images shared by every part, and the indices this run trains / validates on.
    ``images`` is an array in memory or a ``training.shards.ShardImages`` (lazy: its images
    stay in the decoded shards, and a Ray Train run streams them instead)."""

    images: np.ndarray | ShardImages  # uint8 (N, 3, H, W), or numpy-like ShardImages
    labels: np.ndarray  # int64 (N,)
    train_idx: np.ndarray
    val_idx: np.ndarray
    classes: list[str]

    def sample_in_memory(self, limit: int, seed: int = 0) -> TrainData:
        """A TrainData whose images are in memory: itself when they are, else up to
        ``limit`` seeded train images read from the shards (no validation split): what
        a check that samples batches at random (preflight) needs."""
        if isinstance(self.images, np.ndarray):
            return self
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(self.train_idx, min(limit, len(self.train_idx)), replace=False))
        return TrainData(
            self.images.take(pick),
            self.labels[pick],
            np.arange(len(pick)),
            np.zeros(0, np.int64),
            self.classes,
        )


@dataclass(frozen=True)
class WorkerInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(
    values: list[float], device: torch.device, op: dist.ReduceOp.RedOpType | None = None
) -> list[float]:
    if not _distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


class TwoPhaseRun:
    """The recipe as a stepper: ``while not run.done: logs = run.run_epoch()``."""

    def __init__(
        self,
        hp: Hyperparameters,
        data: TrainData,
        *,
        worker: WorkerInfo | None = None,
        backbone_state: dict[str, torch.Tensor] | None = None,
        callbacks: Iterable[Callback] = (),
        quiet: bool = False,
        batches: Any = None,
    ):
        """``batches``: where the run's batches come from (training.loaders:
        ``StreamedBatches`` for a Ray Data stream); default: ``data``'s arrays in memory."""
        self.hp, self.data = hp, data
        worker = worker or WorkerInfo()
        self.rank, self.world_size, self.device = worker.rank, worker.world_size, worker.device
        self.quiet = quiet
        torch.manual_seed(hp.seed)
        self.num_classes = len(data.classes)
        self._build_model(backbone_state)
        self._build_loss()
        self.extra_callbacks = list(callbacks) + build_callbacks(hp.callbacks)
        self.phases = [
            (p, e, lr)
            for p, e, lr in (
                (1, hp.phase1_epochs, hp.phase1_lr),
                (2, hp.phase2_epochs, hp.phase2_lr),
            )
            if e > 0
        ]
        self.epoch = 0  # epochs done, across phases
        self.epoch_in_phase = 0
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.failure: str | None = None
        self.restored_epoch: int | None = None
        self.finished = False
        self.batches = batches or ArrayBatches(
            hp, data, self.rank, self.world_size, pin_memory=self.device.type == "cuda"
        )
        self._train_loader = getattr(self.batches, "loader", None)  # in memory only
        self._begin_phase(0)

    def _build_model(self, backbone_state: dict[str, torch.Tensor] | None) -> None:
        """The model on the device (channels-last on a GPU), its backbone's weights, and
        the EMA of its weights when ``ema_decay`` is set."""
        hp = self.hp
        self.module = build_model(hp.backbone, self.num_classes, hp.dropout)
        self.weights_info = (
            load_backbone_weights(self.module, backbone_state)
            if backbone_state is not None
            else None
        )
        self.channels_last = self.device.type == "cuda"
        self.module.to(self.device)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.module
        self.ema = (
            AveragedModel(
                self.module, multi_avg_fn=get_ema_multi_avg_fn(hp.ema_decay), use_buffers=True
            )
            if hp.ema_decay
            else None
        )

    def _build_loss(self) -> None:
        """The loss on the device, the autocast precision and the fp16 gradient scaler."""
        hp, data = self.hp, self.data
        self.loss_fn = build_loss(hp, data.labels[data.train_idx], self.num_classes)
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        self.amp_dtype = resolve_amp(hp.amp, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )

    # ------------------------------------------------------------------ set-up
    @property
    def eval_module(self) -> nn.Module:
        """The weights that are validated, restored and exported: the EMA's when kept."""
        return self.ema.module if self.ema is not None else self.module

    @property
    def done(self) -> bool:
        return self.finished

    @property
    def phase(self) -> int:
        return self.phases[self.phase_pos][0]

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not _distributed():
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def _phase_callbacks(self, phase: int) -> list[Callback]:
        cbs: list[Callback] = [TerminateOnNaN()]
        if phase == 2:
            cbs.append(
                EarlyStopping(
                    "val_loss",
                    "min",
                    self.hp.early_stopping_patience,
                    self.hp.min_delta,
                    restore_best_weights=True,
                )
            )
        if not self.quiet:
            cbs.append(ProgressLogger())
        return cbs + self.extra_callbacks

    def _begin_phase(self, pos: int) -> None:
        phase, epochs, lr = self.phases[pos]
        self.phase_pos, self.epoch_in_phase, self.stop_training = pos, 0, False
        self.phase_info = set_phase(self.module, phase, self.hp.unfreeze_last)
        self.model = None  # type: ignore[assignment]  # drop the previous DDP wrapper first
        self.model = self._wrap(self.module)  # DDP must see the new trainable set
        self.optimizer = make_optimizer(self.hp, trainable_parameters(self.module), lr)
        self.schedule = EpochSchedule(self.optimizer, self.hp, epochs, lr)
        self.callbacks = CallbackList(self._phase_callbacks(phase), self)
        self._batch_hooks = self.callbacks.wants_batches
        self.callbacks.on_phase_begin(phase)

    # --------------------------------------------------------------- one epoch
    def run_epoch(self) -> dict[str, Any]:
        if self.finished:
            raise RuntimeError("the run is finished")
        phase, epochs, _ = self.phases[self.phase_pos]
        self.epoch += 1
        self.epoch_in_phase += 1
        self.callbacks.on_epoch_begin(self.epoch)
        lr = self.schedule.lr
        t0 = time.perf_counter()
        loss, acc, seen, data_s = self._train_one_epoch()
        train_s = time.perf_counter() - t0
        val_loss, val_acc = self.validate()
        logs = {
            "epoch": self.epoch,
            "phase": phase,
            "epoch_in_phase": self.epoch_in_phase,
            "loss": loss,
            "accuracy": acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - t0,
            "images_per_s": seen / train_s if train_s > 0 else 0.0,
            # the share of the epoch's training time spent waiting for the next batch
            # (read + augment): how long the model (the GPU, when there is one) waited
            "data_wait": data_s / train_s if train_s > 0 else 0.0,
        }
        self.callbacks.on_epoch_end(self.epoch, logs)  # callbacks see the epoch as it ran
        self.schedule.step(val_loss)
        self.stop_training = bool(
            _all_reduce([float(self.stop_training)], self.device, dist.ReduceOp.MAX)[0]
        )
        self.history.append(logs)
        if self.stop_training or self.epoch_in_phase >= epochs:
            self.callbacks.on_phase_end(phase)
            if self.failure or self.phase_pos + 1 >= len(self.phases):
                self.finished = True
            else:
                self._begin_phase(self.phase_pos + 1)
        return logs

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def _train_one_epoch(self) -> tuple[float, float, int, float]:
        hp, model, opt = self.hp, self.model, self.optimizer
        train_mode(model)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        opt.zero_grad(set_to_none=True)
        batches = Timed(with_last(self.batches.train(self.epoch)))
        for i, ((x, y), last) in enumerate(batches):
            x, y = self._to_device(x, y)
            step = (i + 1) % hp.grad_accum == 0 or last
            sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if not step and isinstance(model, DistributedDataParallel):
                sync = model.no_sync()
            with sync:
                with self._autocast():
                    out = model(x)
                    loss = self.loss_fn(out, y)
                self.scaler.scale(loss / hp.grad_accum).backward()
            if step:
                if hp.grad_clip:
                    self.scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(trainable_parameters(self.module), hp.grad_clip)
                self.scaler.step(opt)
                self.scaler.update()
                opt.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update_parameters(self.module)
            total += loss.detach().double() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if self._batch_hooks:  # only then pay for the host sync of .item()
                self.callbacks.on_train_batch_end(
                    i, {"batch": i, "size": len(y), "loss": loss.item()}
                )
        s, c, n = _all_reduce([total.item(), float(correct.item()), float(seen)], self.device)
        return s / max(n, 1), c / max(n, 1), int(n), batches.seconds

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """Loss and accuracy on the whole validation split (each rank takes a slice)."""
        module = self.eval_module
        module.eval()
        total, correct, n = 0.0, 0, 0
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        for x, y in self.batches.val(max(self.hp.batch_size, 64)):
            x, y = self._to_device(x, y)
            with self._autocast():
                out = module(x)
            total += loss_fn(out.float(), y).item()
            correct += int((out.argmax(1) == y).sum().item())
            n += len(y)
        total, n_correct, n_seen = _all_reduce([total, float(correct), float(n)], self.device)
        return total / max(n_seen, 1), n_correct / max(n_seen, 1)

    # ------------------------------------------------------------ state, export
    def state_dict(self) -> dict[str, Any]:
        """Plain data only (checkpoints load with weights_only=True); format 2 keeps the
        callbacks' state by key (1: a positional list, no longer read)."""
        return {
            "format": 2,
            "phase_pos": self.phase_pos,
            "epoch": self.epoch,
            "epoch_in_phase": self.epoch_in_phase,
            "finished": self.finished,
            "failure": self.failure,
            "restored_epoch": self.restored_epoch,
            "history": self.history,
            "model": self.module.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "callbacks": self.callbacks.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], rng: torch.Tensor | None = None) -> None:
        """Restore a state_dict; ``rng`` is this rank's own random state when saved."""
        self.module.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if state["phase_pos"] != self.phase_pos:
            self._begin_phase(state["phase_pos"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.callbacks.load_state_dict(state["callbacks"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.epoch_in_phase = state["epoch"], state["epoch_in_phase"]
        self.finished, self.failure = state["finished"], state["failure"]
        self.restored_epoch, self.history = state["restored_epoch"], list(state["history"])
        torch.set_rng_state(rng if rng is not None else state["rng"])

    def summary(self) -> dict[str, Any]:
        best = min(self.history, key=lambda r: r["val_loss"]) if self.history else None
        return {
            "final": True,
            "epochs": self.epoch,
            "failure": self.failure,
            "restored_epoch": self.restored_epoch,
            "best_val_loss": best["val_loss"] if best else None,
            "best_val_accuracy": max((r["val_accuracy"] for r in self.history), default=None),
        }

    def export(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """A model.pt package of the evaluated weights (or of ``state_dict``)."""
        package = export_model(self.eval_module, self.hp, self.data.classes)
        if state_dict is not None:
            package["state_dict"] = {k: v.detach().cpu() for k, v in state_dict.items()}
        return package
