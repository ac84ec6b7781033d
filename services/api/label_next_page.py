"""A predict job's "What to label next" section (its request's ``label_next``): the first
rows of to_label.csv (services/jobs/label_next_step.py) as a table, and the contact
sheet, to_label.png, served from the job's folder in the store. No torch: the CSV is read
as text."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from services.api.deps import READ_PAGE, JobDep, StoreDep
from services.api.markup import e, store_png, table
from services.store.artifacts import TO_LABEL_CSV, TO_LABEL_PNG, predictions_prefix

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])
SHOWN = 50  # rows of the table


async def read_to_label(store: Any, job_id: int) -> list[dict[str, str]] | None:
    """to_label.csv's rows, or None when the job has none (or the store cannot say)."""
    try:
        raw = await asyncio.to_thread(store.bytes, predictions_prefix(job_id) + TO_LABEL_CSV)
    except Exception:  # noqa: BLE001 - absent, or the store cannot be reached
        return None
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"))))


async def section(store: Any, job_id: int, root: str) -> str:
    """The job page's section, read from the store ("" when the job has no to_label.csv)."""
    return to_label_section(await read_to_label(store, job_id), job_id, root)


def to_label_section(rows: list[dict[str, str]] | None, job_id: int, root: str) -> str:
    """The section: how many, the sheet, the first ``SHOWN`` rows."""
    if rows is None:
        return ""
    body = "".join(
        f"<tr><td class=num>{e(r.get('rank'))}</td><td>{e(r.get('path'))}</td>"
        f"<td>{e(r.get('label_1'))}</td><td class=num>{e(_short(r.get('probability_1')))}</td>"
        f"<td class=num>{e(_short(r.get('margin')))}</td></tr>"
        for r in rows[:SHOWN]
    )
    img = (
        f'<img class="plot" alt="images to label next" '
        f'src="{e(root)}/ui/jobs/{job_id}/{TO_LABEL_PNG}">'
        if rows
        else ""
    )
    more = f", the first {SHOWN} below" if len(rows) > SHOWN else ""
    return (
        '<section id="label-next"><h2>What to label next</h2>'
        f'<p class="muted">{len(rows)} images, most useful first: the smallest margins '
        "(top-1 minus top-2 probability), spread over the model's embeddings"
        f"{more}; every one in {e(TO_LABEL_CSV)} beside the predictions</p>"
        + img
        + table(
            ["rank", "image", "predicted", "probability", "margin"],
            body,
            table_id="label-next-table",
            empty="no readable image to rank",
        )
        + "</section>"
    )


def _short(value: str | None) -> str:
    try:
        return f"{float(value or ''):.3f}"
    except ValueError:
        return value or ""


@router.get(f"/ui/jobs/{{job_id}}/{TO_LABEL_PNG}")
async def job_page_to_label(job: JobDep, store: StoreDep) -> Response:
    """The contact sheet of the images to label next (predictions/job-<id>/)."""
    return await store_png(store, predictions_prefix(job.id) + TO_LABEL_PNG)
