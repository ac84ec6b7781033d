"""Jobs: list, one job (by id or batch), its epochs, curves and health report; submit a
request (POST /jobs) and cancel a job."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from sqlalchemy.exc import DataError

from services.api import reads
from services.api.deps import READ, WRITE, DbDep, JobDep, SettingsDep, StoreDep, not_found
from services.api.schemas import (
    BatchId,
    Cancelled,
    ErrorOut,
    JobDetail,
    JobPage,
    MetricRow,
    StatusFilter,
    Submitted,
)
from services.db import repo
from services.errors import one_line
from services.events.broker import publish_request
from services.intake.admission import Rejection, admit
from services.intake.model_ref import unresolved
from services.intake.records import create_job
from services.intake.request import MAX_INT, TrainingRequest
from services.jobs import lifecycle
from services.jobs.ray_jobs import RayJobs
from services.statuses import FINAL_STATUSES, JobStatus
from services.store.artifacts import HEALTH_FILE, report_key

log = logging.getLogger("colecionador.api")

router = APIRouter(prefix="/jobs", tags=["jobs"], responses={404: {"model": ErrorOut}})
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}}


@router.get("", response_model=JobPage, dependencies=[READ])
async def list_jobs(
    db: DbDep,
    status: Annotated[
        StatusFilter | None, Query(description="only jobs in this status (empty: all)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> JobPage:
    """Jobs, newest first."""
    return await db(reads.job_page, status or None, limit, offset)


@router.get("/by-batch/{batch_id}", response_model=JobDetail, dependencies=[READ])
async def job_by_batch(batch_id: BatchId, db: DbDep) -> JobDetail:
    job = await db(reads.job_detail_by_batch, batch_id)
    if job is None:
        raise not_found(f"job for batch {batch_id}")
    return job


@router.get("/{job_id}", response_model=JobDetail, dependencies=[READ])
async def get_job(job: JobDep, db: DbDep) -> JobDetail:
    detail = await db(reads.job_detail, job.id)
    if detail is None:  # deleted since JobDep found it
        raise not_found(f"job {job.id}")
    return detail


@router.get("/{job_id}/metrics", response_model=list[MetricRow], dependencies=[READ])
async def job_metrics(job: JobDep, db: DbDep) -> list[MetricRow]:
    """One row per epoch (both phases), in order."""
    return await db(reads.metric_rows, job.id)


@router.get(
    "/{job_id}/curves.png",
    response_class=Response,
    dependencies=[READ],
    responses=reads.PNG_RESPONSES,
)
async def job_curves(job: JobDep, db: DbDep) -> Response:
    """Loss, accuracy and learning rate per epoch, drawn from the recorded rows."""
    return await reads.curves_png(db, job.id)


@router.get("/{job_id}/health", response_model=dict[str, Any], dependencies=[READ])
async def job_health(job: JobDep, store: StoreDep) -> dict[str, Any]:
    """The data health report written before training: images per class, imbalance,
    unreadable files, exact and near duplicates, leakage across the split, sizes,
    channels, and the findings (kind, message, count)."""
    report = await asyncio.to_thread(store.json, report_key(job.id, HEALTH_FILE))
    if report is None:
        raise HTTPException(404, f"job {job.id} has no health report (yet)")
    return report


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    dependencies=[WRITE],
    responses={**AUTH_ERRORS, 503: {"model": ErrorOut}},
)
async def submit_job(
    request: Annotated[TrainingRequest, Body()], settings: SettingsDep
) -> Submitted:
    """Record the request (a known batch_id returns its job, ``created: false``) and
    publish it on the requests queue, where the ingress submits it as a Ray job. It
    is published when the job is new, or still queued without a Ray job (an earlier
    publish may have failed); never for a job that runs or has finished. A dataset_uri
    or weights outside the operator's roots is refused (422), and so is a predict request
    whose model names no version."""
    admitted = await asyncio.to_thread(admit, request, settings)
    if isinstance(admitted, Rejection):
        raise HTTPException(422, admitted.detail())
    if admitted.mode == "predict":  # a model that names no version is refused here
        why = await asyncio.to_thread(unresolved, settings, admitted.model or "")
        if why is not None:
            raise HTTPException(422, Rejection(why).detail())
    try:
        job, created = await asyncio.to_thread(create_job, settings, request)
    except DataError as exc:
        raise HTTPException(
            422, f"the database refused a value: {one_line(exc.orig or exc)}"
        ) from None
    publish = created or (job.status == JobStatus.QUEUED and job.ray_job_id is None)
    if publish:
        try:
            await asyncio.to_thread(
                publish_request, settings.amqp_url, settings.requests_queue, request.to_json()
            )
        except Exception as exc:  # noqa: BLE001 - the broker is down: the client retries
            log.error("job %s recorded, not published: %s", job.id, exc)
            raise HTTPException(
                503,
                f"job {job.id} is recorded but the request could not be published on "
                f"{settings.requests_queue} ({type(exc).__name__}); POST it again",
                headers={"Retry-After": "5"},
            ) from None
    return Submitted(
        job_id=job.id, batch_id=job.batch_id, status=job.status, created=created, published=publish
    )


def _already_ended(job: Any) -> HTTPException:
    return HTTPException(409, f"job {job.id} has already ended: {job.status}")


@router.post(
    "/{job_id}/cancel",
    response_model=Cancelled,
    dependencies=[WRITE],
    responses={
        **AUTH_ERRORS,
        409: {"model": ErrorOut},
        502: {"model": ErrorOut},
        504: {"model": ErrorOut},
    },
)
async def cancel_job(job: JobDep, db: DbDep, settings: SettingsDep, request: Request) -> Cancelled:
    """Cancel a job that has not ended: it is marked ``cancelled`` at once (with its
    ``cancelled`` event), so nothing it does afterwards can end it otherwise or keep a
    version; then its Ray job, if it has one, is stopped and awaited. A finished job
    (success, failed, cancelled) answers 409."""
    if job.status in FINAL_STATUSES:
        raise _already_ended(job)
    if job.ray_job_id is None and job.status != JobStatus.QUEUED:
        raise HTTPException(
            409,
            f"job {job.id} is {job.status} outside a Ray job (a local "
            "`colecionador train`?): it cannot be stopped from here",
        )
    if await asyncio.to_thread(lifecycle.cancel, settings, job.id, "cancelled over HTTP") is None:
        raise _already_ended(await db(repo.get_job, job.id))
    if job.ray_job_id is None:  # still queued: nothing runs it yet
        return Cancelled(job_id=job.id, status=JobStatus.CANCELLED)
    ray_job_id = job.ray_job_id
    try:
        ray_status = await asyncio.to_thread(
            lambda: RayJobs(settings).stop_and_wait(ray_job_id, request.app.state.cancel_wait_s)
        )
    except TimeoutError as exc:
        raise HTTPException(504, f"job {job.id} is cancelled; {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the job server is unreachable
        raise HTTPException(
            502,
            f"job {job.id} is cancelled, but its Ray job "
            f"{job.ray_job_id} could not be stopped: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
        ) from None
    return Cancelled(
        job_id=job.id,
        status=JobStatus.CANCELLED,
        ray_job_id=job.ray_job_id,
        ray_job_status=ray_status,
    )
