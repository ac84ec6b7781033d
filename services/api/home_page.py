"""The status page (/): the models with their latest version and gate verdict, the aliases and
their moves, the jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.api import reads
from services.api.deps import READ_PAGE, DbDep
from services.api.markup import badge, e, fmt, html_page, root_path, table, when
from services.api.schemas import (
    AliasMoveOut,
    AliasOut,
    Job,
    JobPage,
    ModelSummary,
    StatusFilter,
)
from services.db import repo
from services.statuses import FINAL_STATUSES, JOB_STATUSES

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])


def _jobs_table(jobs: list[Job], root: str) -> str:
    rows = "".join(
        f'<tr data-job-id="{j.id}">'
        f'<td class="num"><a href="{e(root)}/ui/jobs/{j.id}">{j.id}</a></td>'
        f'<td class="clip" title="{e(j.batch_id)}">{e(j.batch_id)}</td>'
        f'<td class="clip">{e(j.model_name)}</td><td>{e(j.mode)}</td>'
        f"<td>{badge(j.status)}</td><td class=num>{fmt(j.accuracy)}</td>"
        f"<td class=when>{when(j.created_at)}</td><td class=when>{when(j.finished_at)}</td>"
        f'<td class="error">{e(j.error) if j.error else ""}</td></tr>'
        for j in jobs
    )
    return table(
        ["id", "batch", "model", "mode", "status", "accuracy", "created", "finished", "error"],
        rows,
        table_id="jobs",
        empty="no jobs",
    )


def _models_table(models: list[ModelSummary], root: str) -> str:
    rows = "".join(
        f'<tr data-model="{e(m.name)}"><td>{e(m.name)}</td><td class=num>v{m.latest.version}</td>'
        f"<td>{badge(m.latest.status)}</td><td class=num>{fmt(m.latest.accuracy)}</td>"
        f"<td class=num>{fmt(m.latest.precision)}</td><td class=num>{fmt(m.latest.recall)}</td>"
        f"<td class=num>{m.versions}</td>"
        f"<td class=num>{'v' + str(m.latest_approved) if m.latest_approved else '–'}</td>"
        f'<td><a href="{e(root)}/ui/jobs/{m.latest.job_id}">job {m.latest.job_id}</a></td>'
        f"<td>{when(m.latest.trained_at)}</td></tr>"
        for m in models
    )
    return table(
        [
            "model",
            "latest",
            "gate",
            "accuracy",
            "precision",
            "recall",
            "versions",
            "latest approved",
            "job",
            "trained",
        ],
        rows,
        table_id="models",
        empty="no model versions yet",
    )


def _aliases_section(aliases: list[AliasOut], names: list[str], moves: list[AliasMoveOut]) -> str:
    """Each model's aliases (which version answers as production, staging, ...) and the
    latest moves: who, when, why, and whether a move overrode the gate."""
    rows = "".join(
        f'<tr data-model="{e(n)}" data-alias="{e(a.alias)}"><td>{e(n)}</td><td>{e(a.alias)}</td>'
        f"<td class=num>v{a.version}</td><td>{e(a.moved_by)}</td>"
        f"<td class=when>{when(a.moved_at)}</td></tr>"
        for n, a in zip(names, aliases)
    )
    history = "".join(
        f'<tr data-model="{e(m.model_name)}" data-alias="{e(m.alias)}">'
        f"<td class=when>{when(m.moved_at)}</td><td>{e(m.model_name)}</td><td>{e(m.alias)}</td>"
        f"<td class=num>{'v' + str(m.from_version) if m.from_version else '–'}</td>"
        f"<td class=num>v{m.to_version}</td><td>{e(m.moved_by)}</td>"
        f'<td class="error">{e(m.reason)}</td>'
        f"<td>{badge('overrode gate') if m.overrode_gate else ''}</td></tr>"
        for m in moves
    )
    return (
        "<h2>Aliases</h2>"
        + table(
            ["model", "alias", "version", "moved by", "moved"],
            rows,
            table_id="aliases",
            empty="no aliases yet",
        )
        + '<h2>Alias history <span class="muted">(newest first)</span></h2>'
        + table(
            ["when", "model", "alias", "from", "to", "by", "why", ""],
            history,
            table_id="alias-history",
            empty="no alias moves yet",
        )
    )


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, db: DbDep, status: StatusFilter | None = None) -> HTMLResponse:
    status = status or None

    def both(s: Any) -> tuple[JobPage, list[ModelSummary], Any, list[AliasMoveOut]]:
        aliases = repo.model_aliases(s)
        return (
            reads.job_page(s, status, 100, 0),
            reads.models(s),
            ([a.model_name for a in aliases], [AliasOut.model_validate(a) for a in aliases]),
            [AliasMoveOut.model_validate(m) for m in repo.alias_moves(s, None, 20)],
        )

    page, models, (names, aliases), moves = await db(both)
    root = root_path(request)
    filters = " ".join(f'<a href="{e(root)}/?status={s}">{badge(s)}</a>' for s in JOB_STATUSES)
    shown = f"{len(page.items)} of {page.total}" + (f" {e(status)}" if status else "")
    body = (
        "<h2>Models: latest version and gate verdict</h2>"
        + _models_table(models, root)
        + _aliases_section(aliases, names, moves)
        + f'<h2>Jobs <span class="muted">({shown}, newest first)</span></h2>'
        + f'<p class="filters">filter: <a href="{e(root)}/">all</a> {filters}</p>'
        + _jobs_table(page.items, root)
        + f'<p class="muted">API: <a href="{e(root)}/docs">{e(root)}/docs</a></p>'
    )
    active = any(j.status not in FINAL_STATUSES for j in page.items)
    return HTMLResponse(html_page("status", body, root, refresh=active))
