"""Where a job runs: the cluster checked once (Ray up, the store reachable from every node,
GPUs decided)."""

from __future__ import annotations

from services.config import Settings
from services.db import repo
from services.errors import StepFailed
from services.intake.spec import JobSpec
from services.jobs.ray_jobs import alive_nodes, init_ray
from services.jobs.steps.context import StepContext


def driver_uses(settings: Settings) -> tuple[str, ...]:
    """What a job's driver needs that an embedded default would give it on one node only:
    the store (checkpoints, versions), the database, and the broker when it publishes."""
    return ("store", "database", "broker") if settings.publish_events else ("store", "database")


def on_the_cluster(spec: JobSpec, ctx: StepContext) -> JobSpec:
    """Ray up (``init_ray``), then, once per run before anything trains (the driver calls
    it): StepFailed when the settings are one node's embedded defaults on a cluster of
    several nodes (Settings.embedded_on_cluster: a store, database or broker the other
    nodes' processes would not share); and
    the job's GPUs decided, as asked
    (``use_gpu`` true or false) or, None (the default), from the cluster: one GPU per worker
    when it has GPUs, so a queue, HTTP or ``ray job submit`` job on a cluster with GPU
    nodes uses them without a flag. The decision is recorded on the row (a resumed attempt
    keeps it). Returns the spec with ``use_gpu`` decided."""
    import ray

    settings = ctx.settings
    init_ray(settings)
    problem = settings.embedded_on_cluster(alive_nodes(), driver_uses(settings))
    if problem is not None:
        raise StepFailed("settings", problem)
    if spec.use_gpu is not None:
        return spec
    use_gpu = bool(ray.cluster_resources().get("GPU", 0) >= 1)
    with ctx.sessions() as s:
        repo.set_use_gpu(s, ctx.job_id, use_gpu)
    return spec.model_copy(update={"use_gpu": use_gpu})
