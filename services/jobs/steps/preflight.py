"""run_preflight: overfit one batch and the LR range test, as a Ray task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from services.db import repo
from services.errors import StepFailed, one_line
from services.intake.spec import JobSpec
from services.jobs.ray_jobs import init_ray
from services.jobs.steps.context import StepContext
from services.jobs.steps.report import put_report
from services.store.artifacts import LR_RANGE_PNG, PREFLIGHT_FILE
from training.hyperparams import Hyperparameters
from training.loop import TrainData

# ----------------------------------------------------------------- preflight
PREFLIGHT_IMAGES = 1024  # train images the checks sample from when the data is streamed


@dataclass(frozen=True)
class Preflight:
    hp: Hyperparameters  # with the suggested phase1_lr when use_suggested_lr
    report: dict[str, Any] | None  # None: preflight was not asked for


def run_preflight(
    spec: JobSpec, ctx: StepContext, train_data: TrainData, backbone_state: Any
) -> Preflight:
    """Overfit one batch and the LR range test, as a Ray task with a worker's resources
    (a GPU with --gpu); fails the job if one batch cannot be overfit; with
    use_suggested_lr the suggestion becomes phase1_lr (recorded with the job)."""
    hp, store, say = spec.hyperparameters, ctx.store, ctx.say
    if not hp.preflight:
        return Preflight(hp, None)
    import ray

    from training.preflight import preflight

    def run(hp: Hyperparameters, data: TrainData, state: Any) -> dict[str, Any]:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return preflight(hp, data, state, device)

    init_ray(ctx.settings)
    task = ray.remote(
        num_cpus=1, num_gpus=1 if spec.use_gpu else 0, resources=ctx.settings.worker_resources
    )(run)
    sample = train_data.sample_in_memory(PREFLIGHT_IMAGES, hp.seed)  # streamed: a sample
    try:
        result = ray.get(task.remote(hp, sample, backbone_state))
    except Exception as e:  # noqa: BLE001 - the task's error, whatever it is
        raise StepFailed("preflight", one_line(e)) from e
    put_report(store, ctx.job_id, LR_RANGE_PNG, result.pop("png"))
    put_report(store, ctx.job_id, PREFLIGHT_FILE, result)
    overfit, suggested = result["overfit"], result["lr_range"]["suggested_lr"]
    say(f"preflight: {overfit['message']}; LR range test suggests phase1_lr {suggested:.2g}")
    if not overfit["passed"]:
        raise StepFailed("preflight", overfit["message"])
    if hp.use_suggested_lr:
        hp = hp.model_copy(update={"phase1_lr": suggested})
        with ctx.sessions() as s:
            repo.set_hyperparameters(s, ctx.job_id, hp.effective())  # all of them, recorded
    return Preflight(hp, result)
