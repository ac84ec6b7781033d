"""The read side shared by the JSON routes and the pages: repo queries in one session,
turned into response models; the PNGs (curves drawn from the rows, the stored confusion
matrix)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from fastapi import HTTPException
from fastapi.responses import Response

from services.api.deps import Database, StoreReader, not_found
from services.api.schemas import (
    Job,
    JobDetail,
    JobPage,
    MetricRow,
    ModelSummary,
    VersionDetail,
    VersionSummary,
)
from services.db import repo
from services.db.repo import json_safe
from services.store.artifacts import CONFUSION_PNG, ERRORS_FILE, METRICS_FILE, version_prefix

PNG = "image/png"
_plot_lock = threading.Lock()  # pyplot keeps global state: one figure at a time


def job_detail(s: Any, job_id: int) -> JobDetail | None:
    job = repo.get_job(s, job_id)
    if job is None:
        return None
    return JobDetail.from_row(
        job, repo.hyperparameters(s, job_id), list(repo.job_versions(s, job_id))
    )


def job_detail_by_batch(s: Any, batch_id: str) -> JobDetail | None:
    job = repo.get_job_by_batch(s, batch_id)
    return None if job is None else job_detail(s, job.id)


def job_page(s: Any, status: str | None, limit: int, offset: int) -> JobPage:
    jobs = repo.list_jobs(s, status=status, limit=limit, offset=offset)
    return JobPage(
        items=[Job.model_validate(j) for j in jobs],
        total=repo.count_jobs(s, status),
        limit=limit,
        offset=offset,
    )


def metric_rows(s: Any, job_id: int) -> list[MetricRow]:
    return [MetricRow(**r) for r in repo.epoch_rows(s, job_id)]


def models(s: Any) -> list[ModelSummary]:
    return [ModelSummary.from_row(m) for m in repo.list_models(s)]


def versions(s: Any, name: str) -> list[VersionSummary]:
    return [VersionSummary.from_row(v) for v in repo.versions(s, name)]


def version_detail(s: Any, mv: Any, store: StoreReader | None = None) -> VersionDetail:
    """A version's row; with ``store``, also its evaluation and error report from the
    store (the row still answers when the store cannot be read)."""
    job = repo.get_job(s, mv.job_id)
    detail = VersionDetail.from_row(mv, job.batch_id if job else None)
    if store is not None:
        prefix = version_prefix(mv.model_name, mv.version)
        try:
            detail.evaluation = json_safe(
                json.loads(store.bytes(prefix + METRICS_FILE)).get("test")
            )
        except Exception as exc:  # noqa: BLE001 - the row still answers
            detail.evaluation_error = f"{type(exc).__name__}: {exc}"[:500]
        detail.errors = store.json(prefix + ERRORS_FILE)
    return detail


def job_versions(s: Any, job_id: int) -> list[VersionDetail]:
    return [version_detail(s, mv) for mv in repo.job_versions(s, job_id)]


def _render_curves(db: Database, job_id: int) -> bytes | None:
    rows = db.call(repo.epoch_rows, job_id)
    if not rows:
        return None
    from training.plots import curves_png

    clean = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]
    with _plot_lock:
        return curves_png(clean, f"job {job_id}")


async def curves_png(db: Database, job_id: int) -> Response:
    """Loss, accuracy and learning rate per epoch, drawn from the recorded rows."""
    png = await asyncio.to_thread(_render_curves, db, job_id)
    if png is None:
        raise HTTPException(404, f"job {job_id} has no epochs recorded yet")
    return Response(png, media_type=PNG, headers={"Cache-Control": "no-cache"})


async def confusion_png(db: Database, store: StoreReader, name: str, version: int) -> Response:
    """The test split's confusion matrix, as stored with the version."""
    if await db(repo.get_version, name, version) is None:
        raise not_found(f"version {version} of model {name}")
    key = version_prefix(name, version) + CONFUSION_PNG
    try:
        png = await asyncio.to_thread(store.bytes, key)
    except Exception as exc:  # noqa: BLE001 - a store error of any kind
        raise HTTPException(502, f"cannot read {key} from the store: {exc}") from None
    # a version's artifacts never change: a browser may keep the image an hour, and
    # revalidates it with its ETag after that
    return Response(png, media_type=PNG, headers={"Cache-Control": "max-age=3600"})


PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG: {}}, "description": "a PNG image"}
}
