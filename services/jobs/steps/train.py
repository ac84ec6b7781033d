"""train: Ray Train's TorchTrainer over the two phases."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.errors import StepFailed, one_line
from services.events import mlflow_outbox
from services.intake.spec import JobSpec
from services.jobs.ray_jobs import init_ray
from services.jobs.steps.context import StepContext
from services.store.artifacts import (
    CHECKPOINTS,
    checkpoints_prefix,
)
from training.loop import TrainData
from training.model import (
    load_model,
)
from training.ray_worker import MODEL_FILE as CHECKPOINT_MODEL_FILE


# ----------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainedModel:
    package: bytes  # model.pt as the run wrote it: weights + what rebuilds the model
    summary: dict[str, Any]  # the run's final report
    training_time_s: float

    def module(self) -> torch.nn.Module:
        model, _ = load_model(
            torch.load(io.BytesIO(self.package), map_location="cpu", weights_only=True)
        )
        return model


def train(
    spec: JobSpec,
    ctx: StepContext,
    train_data: TrainData,
    backbone_state: Any,
    datasets: dict[str, Any] | None = None,
) -> TrainedModel:
    """Ray Train's TorchTrainer over both phases, a checkpoint every epoch in the store
    (checkpoints/<job id>); with ``ctx.resume`` the run continues from its latest one.
    ``datasets`` (PreparedData.train_datasets): the workers stream their batches. Every
    worker gets ``spec.hyperparameters`` as a value (validated once, by the driver)."""
    import ray

    from services.jobs.progress import EpochRecorder
    from training.trainer import build_trainer

    settings, store, job_id, hp = ctx.settings, ctx.store, ctx.job_id, spec.hyperparameters
    init_ray(settings)
    storage_path, filesystem = store.ray_storage(CHECKPOINTS)
    if not ctx.resume:  # a reused (storage_path, name) silently resumes an older run
        store.delete_prefix(checkpoints_prefix(job_id))
    config = {
        "hyperparameters": hp,
        "data": ray.put(train_data),
        "backbone_state": ray.put(backbone_state) if backbone_state is not None else None,
    }
    tracked = spec.model_name if mlflow_outbox.enabled(settings) else None
    # the run's params: every effective value, as the trainer gets them (after the search
    # and the preflight's suggested lr)
    mlflow_outbox.record(
        settings, mlflow_outbox.stage_params, job_id, spec.model_name, hp.effective()
    )
    trainer = build_trainer(
        config,
        num_workers=spec.workers(settings.workers),
        use_gpu=bool(spec.use_gpu),
        storage_path=storage_path,
        storage_filesystem=filesystem,
        name=str(job_id),
        max_failures=settings.max_failures,
        callbacks=[EpochRecorder(settings.db_url, job_id, tracked)],
        datasets=datasets,
        resources_per_worker=settings.resources_per_worker(bool(spec.use_gpu)),
    )
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - TrainingFailedError wraps the worker's error
        raise StepFailed("training", one_line(e.__cause__ or e)) from e
    elapsed = time.perf_counter() - t0
    if result.checkpoint is None:
        raise StepFailed("training", "the run reported no checkpoint")
    summary = dict(result.metrics or {})
    if summary.get("failure"):
        raise StepFailed("training", summary["failure"])
    with result.checkpoint.as_directory() as d:
        package = (Path(d) / CHECKPOINT_MODEL_FILE).read_bytes()
    return TrainedModel(package, summary, elapsed)
