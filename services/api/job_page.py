"""A job's page (/ui/jobs/{id}): its facts, gate, health, curves, epochs, confusion matrices,
calibration and hyperparameters, and the images it shows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from services.api import reads
from services.api.deps import READ_PAGE, DbDep, JobDep, StoreDep
from services.api.label_next_page import section as label_next_section
from services.api.markup import badge, e, fmt, html_page, root_path, store_png, table, when
from services.api.quality_sections import (
    calibration_section,
    gate_table,
    health_section,
    label_issues_section,
    mlflow_line,
)
from services.api.schemas import (
    JobDetail,
    JobId,
    MetricRow,
    ModelName,
    VersionDetail,
    VersionNo,
)
from services.db import repo
from services.statuses import FINAL_STATUSES
from services.store.artifacts import (
    HEALTH_FILE,
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
    METRICS_FILE,
    RELIABILITY_FILE,
    report_key,
    version_prefix,
)

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])


def _facts(job: JobDetail) -> str:
    """The job's status, error and what it is (batch, model, data, resources, times)."""
    info = [
        ("batch", job.batch_id),
        ("model", job.model_name),
        ("mode", job.mode),
        ("dataset", job.dataset_uri),
        ("images", job.total_images),
        ("workers", job.num_workers),
        ("gpu", job.use_gpu),
        ("Ray job", job.ray_job_id),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("accuracy", fmt(job.accuracy)),
        ("training time", f"{job.training_time_s:.1f} s" if job.training_time_s else None),
    ]
    return (
        f"<p>Status {badge(job.status)}</p>"
        + (f'<p class="error" id="error">{e(job.error)}</p>' if job.error else "")
        + "<dl>"
        + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in info)
        + "</dl>"
    )


def _curves_and_epochs(job_id: int, rows: list[MetricRow], root: str) -> str:
    """The training curves' picture and a row per epoch (or a note that there are none)."""
    if rows:
        body = (
            f'<h2>Training curves</h2><img class="plot" id="curves" alt="training curves" '
            f'src="{e(root)}/ui/jobs/{job_id}/curves.png">'
        )
        epochs = "".join(
            f"<tr><td class=num>{r.epoch}</td><td class=num>{r.phase}</td>"
            f"<td class=num>{fmt(r.loss)}</td><td class=num>{fmt(r.accuracy)}</td>"
            f"<td class=num>{fmt(r.val_loss)}</td><td class=num>{fmt(r.val_accuracy)}</td>"
            f"<td class=num>{fmt(r.lr, 6) if r.lr is None else f'{r.lr:.2g}'}</td>"
            f"<td class=num>{fmt(r.epoch_time_s, 1)}</td></tr>"
            for r in rows
        )
        return (
            body
            + "<h2>Epochs</h2>"
            + table(
                [
                    "epoch",
                    "phase",
                    "loss",
                    "accuracy",
                    "val loss",
                    "val accuracy",
                    "lr",
                    "time (s)",
                ],
                epochs,
                table_id="epochs",
            )
        )
    return '<h2>Training curves</h2><p class="muted" id="no-curves">no epochs recorded yet</p>'


def render_job_page(
    job: JobDetail,
    rows: list[MetricRow],
    versions: list[VersionDetail],
    root: str,
    health: dict[str, Any] | None = None,
    version_metrics: list[dict[str, Any] | None] | None = None,
    label_issues: dict[str, Any] | None = None,
    mlflow: dict[str, Any] | None = None,
    label_next: str = "",
) -> str:
    body = _facts(job) + mlflow_line(mlflow)
    body += "".join(gate_table(v, root) for v in versions) or (
        '<h2>Gate</h2><p class="muted" id="no-gate">no model version (yet)</p>'
    )
    body += health_section(health)
    body += label_issues_section(label_issues, job.id, root)
    body += label_next  # a predict job's "What to label next" (label_next_page.py)
    body += _curves_and_epochs(job.id, rows, root)
    for v in versions:
        body += (
            f"<h2>Confusion matrix ({e(v.model_name)} v{v.version}, test split)</h2>"
            f'<img class="plot" alt="confusion matrix" '
            f'src="{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}/'
            'confusion_matrix.png">'
        )
    for v, m in zip(versions, version_metrics or []):
        body += calibration_section(v, m, root)
    body += (
        "<h2>Hyperparameters</h2><details><summary>every effective value</summary><pre>"
        + e(json.dumps(job.hyperparameters, indent=2, sort_keys=True))
        + "</pre></details>"
    )
    return html_page(f"job {job.id}", body, root, refresh=job.status not in FINAL_STATUSES)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: JobId, db: DbDep, store: StoreDep) -> HTMLResponse:
    def load(s: Any) -> tuple[JobDetail | None, list[MetricRow], list[VersionDetail], Any]:
        job = reads.job_detail(s, job_id)
        if job is None:
            return None, [], [], None
        rows, versions = reads.metric_rows(s, job_id), reads.job_versions(s, job_id)
        return job, rows, versions, repo.mlflow_backlog(s, job_id)

    job, rows, versions, mlflow = await db(load)
    root = root_path(request)
    if job is None:
        return HTMLResponse(
            html_page("not found", f"<p>No job {job_id}.</p>", root), status_code=404
        )
    health = await asyncio.to_thread(store.json, report_key(job_id, HEALTH_FILE))
    labels = await asyncio.to_thread(store.json, report_key(job_id, LABEL_ISSUES_FILE))
    metrics = [
        await asyncio.to_thread(store.json, version_prefix(v.model_name, v.version) + METRICS_FILE)
        for v in versions
    ]
    label_next = ""
    if job.mode == "predict":
        label_next = await label_next_section(store, job_id, root)
    page = render_job_page(job, rows, versions, root, health, metrics, labels, mlflow, label_next)
    return HTMLResponse(page)


@router.get("/ui/jobs/{job_id}/label_issues.png")
async def job_page_label_issues(job: JobDep, store: StoreDep) -> Response:
    """label_check's picture of the top label issues (reports/job-<id>/)."""
    return await store_png(store, report_key(job.id, LABEL_ISSUES_PNG))


@router.get("/ui/models/{name}/versions/{version}/reliability.png")
async def job_page_reliability(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    """The version's reliability diagram (before / after temperature scaling)."""
    if await db(repo.get_version, name, version) is None:
        raise HTTPException(404, f"no version {version} of model {name}")
    return await store_png(store, version_prefix(name, version) + RELIABILITY_FILE)


@router.get("/ui/jobs/{job_id}/curves.png")
async def job_page_curves(job: JobDep, db: DbDep) -> Response:
    return await reads.curves_png(db, job.id)


@router.get("/ui/models/{name}/versions/{version}/confusion_matrix.png")
async def job_page_confusion(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    return await reads.confusion_png(db, store, name, version)
