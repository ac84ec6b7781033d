"""Rows the tests need in a real database, written through the repository as the services
write them."""

from __future__ import annotations

from typing import Any

from services.db import repo


def add_version(s: Any, model: str, status: str, n: int | None = None) -> tuple[Any, Any]:
    """A job and the next version of ``model`` with ``status`` (approved | rejected), not
    committed; (job, version)."""
    n = n or len(repo.versions(s, model)) + 1
    job, _ = repo.create_job(
        s, batch_id=f"{model}-{n}", dataset_uri="x", model_name=model, hyperparameters={}
    )
    mv = repo.reserve_version(
        s,
        model,
        job_id=job.id,
        accuracy=0.9,
        precision=0.9,
        recall=0.9,
        f1=0.9,
        status=status,
        gate={"status": status, "rules": []},
        model_path=f"/store/models/{model}/v{n}/model.pt",
    )
    return job, mv


def add_finished_job(
    s: Any,
    model: str,
    batch_id: str,
    *,
    status: str = "success",
    hyperparameters: dict[str, Any] | None = None,
    epochs: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Any:
    """A job that ended with ``status`` (success | failed), with its hyperparameters and
    epoch rows; ``fields``: create_job's (mode, dataset_uri, total_images) and
    finish_job's (accuracy, training_time_s, error). Committed."""
    made = {k: fields.pop(k) for k in ("mode", "dataset_uri", "total_images") if k in fields}
    made.setdefault("dataset_uri", "x")
    job, _ = repo.create_job(
        s, batch_id=batch_id, model_name=model, hyperparameters=hyperparameters or {}, **made
    )
    for row in epochs or []:
        repo.record_epoch(s, job.id, row["epoch"], row)
    repo.start_job(s, job.id)
    repo.finish_job(s, job.id, status, **fields)
    return job


def add_version_of(
    s: Any, job: Any, status: str, metrics: dict[str, float], rules: list[dict[str, Any]]
) -> Any:
    """The next version of the job's model with these test metrics and gate rules.
    Committed."""
    mv = repo.reserve_version(
        s,
        job.model_name,
        job_id=job.id,
        status=status,
        gate={"status": status, "rules": rules},
        model_path=lambda n: f"/store/models/{job.model_name}/v{n}/model.pt",
        **{k: metrics.get(k, 0.0) for k in ("accuracy", "precision", "recall", "f1")},
        roc_auc=metrics.get("roc_auc"),
    )
    s.commit()
    return mv


def add_tuning_run(
    s: Any, job_id: int, trials: list[dict[str, Any]], *, metric: str = "val_loss", k: int = 3
) -> int:
    """A completed tuning run of the job; ``trials``: record_trial's fields in Tune's
    order (config, status, stopped_at, mean_val_loss, ..., epochs), ranked as given
    (``rank`` in each), the rank-1 trial the winner. Returns the run's id."""
    run = repo.create_tuning_run(
        s,
        job_id,
        grid={},
        base_hyperparameters={},
        k_folds=k,
        metric=metric,
        mode="min" if metric == "val_loss" else "max",
        scheduler="asha",
    )
    for i, t in enumerate(trials):
        repo.record_trial(s, run.id, trial_index=i, trial_id=f"trial-{i}", **t)
    best = next((i for i, t in enumerate(trials) if t.get("rank") == 1), None)
    repo.finish_tuning_run(s, run.id, "completed", best_trial_index=best)
    return run.id
