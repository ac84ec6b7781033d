"""Ray Train's side of the recipe: the worker function, sessions and checkpoint files.

``train_loop_per_worker`` is what ``TorchTrainer`` runs (training.trainer): it resumes from
``ray.train.get_checkpoint()``, steps a ``TwoPhaseRun`` to its end reporting every epoch
with a checkpoint written by rank 0, and ends with one ``final`` report whose checkpoint
holds model.pt. A ``Session`` is where a run reports to and resumes from, so the same
``run_to_end`` also serves a plain process (the overhead benchmark's bare loop).

A checkpoint folder holds ``state.pt`` (rank 0: the run's state_dict), one
``rng-<rank>.pt`` per rank (exact resume on each worker), whatever the callbacks add
(``on_checkpoint``) and, in the final one, ``model.pt``. Checkpoints are read back with
``torch.load(weights_only=True)``: the state is plain data (tensors, dicts, lists, numbers,
strings), so a file planted in the store's checkpoints/ cannot run code on a worker.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.hyperparams import Hyperparameters
from training.loop import TwoPhaseRun, WorkerInfo

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
RNG_FILE = "rng-{rank}.pt"  # every rank's own random state: exact resume on each worker


class Session:
    """Where a run reports to and resumes from: Ray Train, Ray Tune or nothing."""

    def worker(self) -> WorkerInfo:
        return WorkerInfo()

    def latest_state(self, rank: int = 0) -> tuple[dict[str, Any], Any] | None:
        """(state, this rank's RNG state or None) of the latest checkpoint, if any."""
        return None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None, name: str) -> None:  # noqa: ARG002
        return None


class RayTrainSession(Session):
    def __init__(self) -> None:
        # Ray 2.60 names this logger by __file__, so LoggingConfig(log_level) misses its
        # per-report INFO line ("Reporting training result ..."); quiet it here.
        import logging

        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)

    def worker(self) -> WorkerInfo:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        return WorkerInfo(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())

    def latest_state(self, rank: int = 0) -> tuple[dict[str, Any], Any] | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return read_checkpoint(Path(d), rank)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None, name: str) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name if ckpt else None)


class UnsafeCheckpoint(ValueError):
    """A checkpoint file holds more than plain data: it is refused, never unpickled."""


def _load_plain(path: Path) -> Any:
    """``torch.load`` restricted to plain data (tensors, dicts, lists, tuples, numbers,
    strings): whoever can write the store's checkpoints/ must not run code on workers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next(
            (
                ln.strip().removeprefix("WeightsUnpickler error: ").split(". Please")[0]
                for ln in str(e).splitlines()
                if ln.strip().startswith("WeightsUnpickler error")
            ),
            "not plain data",
        )
        raise UnsafeCheckpoint(
            f"refused to load {path.name} of checkpoint {path.parent}: {why}"
        ) from None


def read_checkpoint(directory: Path, rank: int = 0) -> tuple[dict[str, Any], Any]:
    """(the run's state, this rank's RNG state or None) from a checkpoint folder; both
    files are loaded as plain data only (``UnsafeCheckpoint`` otherwise)."""
    state = _load_plain(directory / STATE_FILE)
    rng_file = directory / RNG_FILE.format(rank=rank)
    rng = _load_plain(rng_file) if rng_file.exists() else None
    return state, rng


def write_checkpoint(run: TwoPhaseRun, directory: Path, final: bool = False) -> None:
    """Every rank writes its RNG state; rank 0 the run's state, what the callbacks add,
    and, at the end, the exported model. Ray merges the ranks' folders into one."""
    torch.save(torch.get_rng_state(), directory / RNG_FILE.format(rank=run.rank))
    if run.rank != 0:
        return
    torch.save(run.state_dict(), directory / STATE_FILE)
    run.callbacks.on_checkpoint(directory)
    if final:
        torch.save(run.export(), directory / MODEL_FILE)


def run_to_end(run: TwoPhaseRun, session: Session) -> dict[str, Any]:
    """Step the run to its end, reporting every epoch with a checkpoint, then one final
    report whose checkpoint also holds the exported model."""
    restored = session.latest_state(run.rank)
    if restored is not None:
        run.load_state_dict(*restored)
        if run.rank == 0 and not run.quiet:
            print(f"resumed after epoch {run.epoch} (phase {run.phase})", flush=True)

    def report(metrics: dict[str, Any], name: str, final: bool = False) -> None:
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(run, Path(d), final)
            session.report(metrics, d, name)

    while not run.done:
        logs = run.run_epoch()
        report(logs, f"epoch-{logs['epoch']:04d}")
    summary = run.summary()
    report(summary, "final", final=True)
    return summary


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """TorchTrainer's function. config: hyperparameters (dict), data (TrainData or an
    ObjectRef to it), backbone_state (a state dict, an ObjectRef to one, or None), and
    ``streamed``: batches come from the trainer's ``train`` / ``val`` datasets."""
    import ray
    import ray.train

    def resolve(x: Any) -> Any:
        return ray.get(x) if isinstance(x, ray.ObjectRef) else x

    session = RayTrainSession()
    hp = Hyperparameters(**config["hyperparameters"])
    data, worker = resolve(config["data"]), session.worker()
    batches = None
    if config.get("streamed"):  # the trainer's datasets: Ray Data over the decoded shards
        from training.loaders import StreamedBatches

        batches = StreamedBatches(
            hp,
            ray.train.get_dataset_shard("train"),
            ray.train.get_dataset_shard("val"),
            len(data.train_idx),
            worker.rank,
            worker.world_size,
            worker.device,
        )
    run = TwoPhaseRun(
        hp,
        data,
        worker=worker,
        backbone_state=resolve(config.get("backbone_state")),
        batches=batches,
    )
    run_to_end(run, session)
