"""Builds the Ray Train TorchTrainer for a job, running training.ray_worker's
``train_loop_per_worker`` on every worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.train import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from training.ray_worker import train_loop_per_worker


def build_trainer(
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    storage_path: str,
    name: str,
    max_failures: int = 1,
    callbacks: Sequence[Any] = (),
    storage_filesystem: Any = None,
    keep_checkpoints: int = 2,
    log_level: str = "WARNING",
    datasets: dict[str, Any] | None = None,
    resources_per_worker: dict[str, float] | None = None,
) -> TorchTrainer:
    """A TorchTrainer running the two-phase loop on ``num_workers`` workers.

    ``datasets`` (``train``, ``val``: Ray Data datasets of the decoded shards) streams the
    data: ``train`` is split across workers (equal rows each), ``val`` is read by every
    worker, which keeps its own slice (no row dropped from validation).

    ``resources_per_worker``: Ray's (None: a CPU, or a GPU with ``use_gpu``), e.g. with a
    node type's custom resource to place the workers on those nodes.

    ``name`` must be unique per job: Ray resumes a run whose (storage_path, name) exists.
    """
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "streamed": bool(datasets)},
        datasets=datasets or None,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(  # type: ignore[call-arg]  # mypy reads Train V1's; V2's has all
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(callbacks),
            # Ray Train's INFO lines ("Reporting training result ...") drown the epoch
            # lines, and its print patch sends every print to the console twice.
            logging_config=LoggingConfig(log_level=log_level),
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
    )
