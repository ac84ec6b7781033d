"""Compare runs: ``GET /compare?jobs=3,5,8`` (services/registry/compare.py). Reads follow
the read-token rule; an unknown job answers 404 naming it, fewer than 2 or more than 8
jobs (or one named twice) 422 naming ``jobs``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BeforeValidator

from services.api.deps import READ, Database, DbDep, StoreDep, StoreReader
from services.api.schemas import ErrorOut
from services.registry.compare import MAX_JOBS, MIN_JOBS, Comparison, JobIds, Run, compare
from services.registry.compare_inputs import UnknownJobs, read_runs, with_store

router = APIRouter(tags=["compare"], responses={404: {"model": ErrorOut}})


def split_ids(value: Any) -> Any:
    """``jobs=3,5,8`` and ``jobs=3&jobs=5&jobs=8`` (a form's checkboxes) alike: every
    comma-separated part of every value, blanks dropped."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [p.strip() for v in value for p in str(v).split(",") if p.strip()]
    return value


JobsQuery = Annotated[
    JobIds,
    BeforeValidator(split_ids),
    Query(description=f"{MIN_JOBS} to {MAX_JOBS} job ids, comma-separated (columns in order)"),
]


async def db_runs(db: Database, ids: list[int]) -> list[Run]:
    """The database's facts of the jobs, on its pool; an unknown job is a 404 naming it."""
    try:
        return await db(read_runs, ids)
    except UnknownJobs as exc:
        raise HTTPException(404, str(exc)) from None


async def load(db: Database, store: StoreReader, ids: list[int]) -> list[Run]:
    """The runs' facts: the database's, then the store's on threads."""
    return await asyncio.to_thread(with_store, await db_runs(db, ids), store.json)


@router.get("/compare", response_model=Comparison, dependencies=[READ])
async def compare_jobs(jobs: JobsQuery, db: DbDep, store: StoreDep) -> Comparison:
    """The jobs side by side: the hyperparameters that differ (only those), the test
    metrics (best marked) and per-class figures, the gate's rules, the data sets (the
    test split's digest says whether the figures were measured on the same images),
    every job's epochs, and for a tune job every config's fold means. A figure a job
    lacks is null; what could not be read from the store is listed in ``missing``."""
    return compare(await load(db, store, jobs))
