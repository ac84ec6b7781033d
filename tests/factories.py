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
