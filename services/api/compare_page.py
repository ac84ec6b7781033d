"""The compare page, ``/ui/compare?jobs=3,5,8``: the jobs side by side, in the status page's
style (server-rendered, no script, every value escaped): the hyperparameters that differ,
the test metrics with the best in bold, per-class figures, the curves overlaid, the gate's
rules, the data sets and, for a tune job, its configs' fold means. Without ``jobs`` it
lists the latest jobs to pick from. Its pictures: ``/ui/compare/curves.png?jobs=...`` and
``/ui/jobs/{id}/tuning.png``. Reads follow the read-token rule, HTTP Basic included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BeforeValidator

from services.api import reads
from services.api.deps import READ_PAGE, DbDep, JobDep, StoreDep
from services.api.markup import badge, e, fmt, html_page, root_path, table, when
from services.api.routes.compare import JobsQuery, db_runs, load, split_ids
from services.registry import compare_plots
from services.registry.compare import MAX_JOBS, Comparison, JobIds, RunHead, TuningOut, compare
from services.registry.compare_inputs import job_tuning
from tuning.report import config_text

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])
PICK_JOBS = 50
# the tables line up: a fixed first column, the jobs' columns alike; figures left-aligned
# under their job's name
STYLE = (
    "<style>.cmp table{table-layout:fixed}.cmp thead th:first-child{width:190px}"
    ".cmp #per-class thead th:nth-child(2){width:90px}.cmp td.num{text-align:left}"
    ".cmp section.tuning table{table-layout:auto}.cmp section.tuning thead th:first-child"
    "{width:auto}</style>"
)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if isinstance(v, dict | list) else str(v)


def _cols(c: Comparison, root: str) -> list[str]:
    return ["", *(f'<a href="{e(root)}/ui/jobs/{i}">job {i}</a>' for i in c.jobs)]


def _seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} s"


def _model_cell(r: RunHead) -> str:
    if r.version is None or r.verdict is None:
        return f'{e(r.model_name)} <span class="muted">no version</span>'
    return f"{e(r.model_name)} v{r.version} {badge(r.verdict)}"


def _runs(c: Comparison, root: str) -> str:
    def row(name: str, cells: Sequence[str]) -> str:
        return f"<tr><th>{e(name)}</th>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>"

    rows = [
        row("batch", [e(r.batch_id) for r in c.runs]),
        row("status", [badge(r.status) for r in c.runs]),
        row("mode", [e(r.mode) for r in c.runs]),
        row("model", [_model_cell(r) for r in c.runs]),
        row("epochs", [str(r.epochs) for r in c.runs]),
        row("training time", [_seconds(r.training_time_s) for r in c.runs]),
        row("finished", [when(r.finished_at) for r in c.runs]),
        row(
            "error", [f'<span class="error">{e(r.error)}</span>' if r.error else "" for r in c.runs]
        ),
    ]
    return "<h2>Runs</h2>" + table(_cols(c, root), "".join(rows), table_id="runs")


def _params(c: Comparison, root: str) -> str:
    rows = "".join(
        f'<tr data-param="{e(p.name)}"><th>{e(p.name)}</th>'
        + "".join(
            '<td class="muted">absent</td>' if j in p.absent else f"<td>{e(_value(v))}</td>"
            for j, v in zip(c.jobs, p.values)
        )
        + "</tr>"
        for p in c.hyperparameters
    )
    return (
        f'<h2>Hyperparameters that differ <span class="muted">({c.same_hyperparameters} '
        "the same in every job, not shown)</span></h2>"
        + table(_cols(c, root), rows, table_id="params", empty="every value is the same")
    )


def _num_cells(values: Sequence[float | None], best: Sequence[bool]) -> str:
    return "".join(
        f"<td class=num><b>{fmt(v)}</b></td>" if b else f"<td class=num>{fmt(v)}</td>"
        for v, b in zip(values, best)
    )


def _metrics(c: Comparison, root: str) -> str:
    rows = "".join(
        f'<tr data-metric="{e(m.name)}"><th>{e(m.name)}'
        + ("" if m.higher_is_better else ' <span class="muted">(lower is better)</span>')
        + "</th>"
        + _num_cells(m.values, [j in m.best for j in c.jobs])
        + "</tr>"
        for m in c.metrics
    )
    return '<h2>Test metrics <span class="muted">(best in bold)</span></h2>' + table(
        _cols(c, root), rows, table_id="metrics", empty="no job has test metrics"
    )


def _per_class(c: Comparison, root: str) -> str:
    rows = ""
    for line in c.per_class:
        for n, fig in enumerate(("precision", "recall", "f1")):
            values: list[float | None] = getattr(line, fig)
            known = [v for v in values if v is not None]
            top = max(known) if len(known) > 1 else None
            head = (
                f'<th rowspan=4 data-class="{e(line.name)}">{e(line.name)}</th>' if n == 0 else ""
            )
            best = [v is not None and v == top for v in values]
            rows += f"<tr>{head}<td>{fig}</td>" + _num_cells(values, best)
            rows += "</tr>"
        rows += "<tr><td>support</td>" + "".join(f"<td class=num>{e(s)}</td>" for s in line.support)
        rows += "</tr>"
    cols = _cols(c, root)
    return "<h2>Per class (test split)</h2>" + table(
        ["class", "", *cols[1:]], rows, table_id="per-class", empty="no per-class figures"
    )


def _gate(c: Comparison, root: str) -> str:
    rows = "".join(
        f'<tr data-rule="{e(g.metric)}"><th>{e(g.metric)}</th>'
        + "".join(
            '<td class="muted">not judged</td>'
            if t is None
            else f"<td>{fmt(v)} {e(g.op)} {fmt(t, 2)} {badge('pass' if p else 'fail')}</td>"
            for t, v, p in zip(g.thresholds, g.values, g.passed)
        )
        + "</tr>"
        for g in c.gate
    )
    return "<h2>Gate rules</h2>" + table(
        _cols(c, root), rows, table_id="gate", empty="no job was judged"
    )


def _counts(per_class: dict[str, int] | None) -> str:
    if not per_class:
        return "–"
    return " · ".join(f"{e(k)} {n}" for k, n in per_class.items())


def _same(flag: bool | None, what: str, otherwise: str) -> str:
    """Whether every job has the same ``what`` (its test split, its classes)."""
    attr = f'id="same-{what.replace(" ", "-")}"'
    if flag is None:
        return f'<p class="muted" {attr}>{what}: not known for every job</p>'
    if flag:
        return f"<p {attr}>{what}: the same in every job</p>"
    return f'<p class="error" {attr}>{what}: NOT the same{otherwise}</p>'


def _split(images: int | None, digest: str | None) -> str:
    return "–" if not images else f"{images} images, {e(digest)}"


def _data(c: Comparison, root: str) -> str:
    d = c.data
    rows = [
        ("dataset", [e(s.uri) for s in d.sets]),
        ("images", [e(s.images) for s in d.sets]),
        ("images per class", [_counts(s.per_class) for s in d.sets]),
        ("test split", [_split(s.test_images, s.test_split_digest) for s in d.sets]),
    ]
    if any(s.fingerprint for s in d.sets):  # where a version records one
        rows.append(("fingerprint", [e(s.fingerprint) for s in d.sets]))
    body = "".join(
        f"<tr><th>{k}</th>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>" for k, cells in rows
    )
    return (
        "<h2>Data</h2>"
        + table(_cols(c, root), body, table_id="data")
        + _same(d.same_test_split, "test split", ": the test metrics come from different images")
        + _same(d.same_classes, "classes", "")
    )


def _tuning(t: TuningOut, root: str) -> str:
    ranked = sorted(t.trials, key=lambda x: (x.rank is None, x.rank or 0, x.index))
    rows = "".join(
        f'<tr data-trial="{x.index}"><td class=num>{e(x.rank)}</td><td>{badge(x.status)}</td>'
        f"<td class=num>{x.stopped_at}</td><td class=num>{fmt(x.mean)} ± {fmt(x.std)}</td>"
        f"<td class=num>{' '.join(fmt(f, 3) for f in x.folds)}</td>"
        f"<td>{e(config_text(x.config))}</td></tr>"
        for x in ranked
    )
    return (
        f'<section class="tuning" data-job="{t.job_id}"><h2>Tuning: job {t.job_id}, run '
        f"{t.run_id} ({e(t.metric)}, {t.k_folds} folds, {e(t.status)})</h2>"
        f'<img class="plot" alt="configs of job {t.job_id}" '
        f'src="{e(root)}/ui/jobs/{t.job_id}/tuning.png">'
        + table(["rank", "status", "epochs", f"{e(t.metric)} mean ± std", "folds", "config"], rows)
        + "</section>"
    )


def compare_html(c: Comparison, root: str) -> str:
    ids = ",".join(map(str, c.jobs))
    body = (
        STYLE
        + '<div class="cmp">'
        + _runs(c, root)
        + _params(c, root)
        + _metrics(c, root)
        + _per_class(c, root)
        + '<h2>Curves</h2><img class="plot" id="curves" alt="curves overlaid" '
        f'src="{e(root)}/ui/compare/curves.png?jobs={ids}">'
        + _gate(c, root)
        + _data(c, root)
        + "".join(_tuning(t, root) for t in c.tuning)
        + "</div>"
    )
    if c.missing:
        body += '<p class="muted" id="missing">not read from the store: ' + e("; ".join(c.missing))
        body += "</p>"
    body += (
        f'<p class="muted">JSON: <a href="{e(root)}/compare?jobs={ids}">/compare?jobs={ids}</a></p>'
    )
    return html_page(f"compare jobs {', '.join(map(str, c.jobs))}", body, root)


async def _picker(request: Request, db: DbDep) -> str:
    """A form: the latest jobs as checkboxes (``jobs=`` once per box)."""
    page = await db(reads.job_page, None, PICK_JOBS, 0)
    rows = "".join(
        f'<tr><td><input type="checkbox" name="jobs" value="{j.id}" id="pick-{j.id}"></td>'
        f'<td class=num><label for="pick-{j.id}">{j.id}</label></td><td>{e(j.batch_id)}</td>'
        f"<td>{e(j.model_name)}</td><td>{e(j.mode)}</td><td>{badge(j.status)}</td>"
        f"<td class=num>{fmt(j.accuracy)}</td></tr>"
        for j in page.items
    )
    root = root_path(request)
    body = (
        f"<p>Pick 2 to {MAX_JOBS} jobs.</p>"
        f'<form method="get" action="{e(root)}/ui/compare">'
        + table(["", "id", "batch", "model", "mode", "status", "accuracy"], rows, empty="no jobs")
        + '<p><button type="submit">compare</button></p></form>'
    )
    return html_page("compare", body, root)


PageJobs = Annotated[JobIds | None, BeforeValidator(split_ids), Query()]


@router.get("/ui/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request, db: DbDep, store: StoreDep, jobs: PageJobs = None
) -> HTMLResponse:
    if jobs is None:
        return HTMLResponse(await _picker(request, db))
    try:
        runs = await load(db, store, jobs)
    except HTTPException as exc:
        root = root_path(request)
        return HTMLResponse(
            html_page("not found", f"<p>{e(exc.detail)}.</p>", root), exc.status_code
        )
    return HTMLResponse(compare_html(compare(runs), root_path(request)))


@router.get("/ui/compare/curves.png")
async def compare_curves(jobs: JobsQuery, db: DbDep, store: StoreDep) -> Response:
    """Every job's epochs, overlaid."""
    runs = await db_runs(db, jobs)
    png = await asyncio.to_thread(
        compare_plots.curves_png, [r.job_id for r in runs], [r.epochs for r in runs]
    )
    return Response(png, media_type=reads.PNG, headers={"Cache-Control": "no-cache"})


@router.get("/ui/jobs/{job_id}/tuning.png")
async def tuning_strip(job: JobDep, db: DbDep) -> Response:
    """A tune job's configs, best first: each one's fold mean ± std and its folds."""
    t = await db(job_tuning, job.id)
    if t is None:
        raise HTTPException(404, f"job {job.id} has no tuning run")
    png = await asyncio.to_thread(
        compare_plots.tuning_png, TuningOut(job_id=job.id, **t.model_dump())
    )
    return Response(png, media_type=reads.PNG, headers={"Cache-Control": "no-cache"})
