"""The status page: jobs, the latest model versions with their gate verdict, the models'
aliases and their history (who moved which alias, when and why), and a page
per job with its curves, gate, data health and epochs. Server-rendered HTML (no script);
every value is escaped. Reads follow the read-token rule, with HTTP Basic too (any user
name, the token as the password) so a browser can log in."""

from __future__ import annotations

import asyncio
import html
import json
import math
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from services.api import reads
from services.api.deps import READ_PAGE, DbDep, JobDep, StoreDep
from services.api.schemas import (
    AliasMoveOut,
    AliasOut,
    Job,
    JobDetail,
    JobId,
    JobPage,
    MetricRow,
    ModelName,
    ModelSummary,
    StatusFilter,
    VersionDetail,
    VersionNo,
)
from services.db import repo
from services.db.models import FINAL_STATUSES, JOB_STATUSES
from services.store.artifacts import (
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
    RELIABILITY_FILE,
    report_key,
    version_prefix,
)

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;
background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none}
main{padding:16px 24px;max-width:1200px}h1{font-size:20px;margin:0}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.queued{background:#e2e8f0}.training,.evaluating{background:#fde68a}
.success,.approved,.pass{background:#bbf7d0}
.failed,.rejected,.fail,.overrode{background:#fecaca}.cancelled{background:#d1d5db}
.filters a{margin-right:10px}.muted{color:#6b7280}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;padding:12px;
margin:0}dt{font-weight:600}dd{margin:0;word-break:break-all}
img.plot{max-width:100%;background:#fff;border:1px solid #e4e7eb}.error{color:#b91c1c}
td.clip{max-width:240px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.error{max-width:320px;overflow-wrap:anywhere}td.when{white-space:nowrap}
"""


def e(value: Any) -> str:
    """Escape for HTML text and attribute values; None shows as a dash."""
    return "–" if value is None else html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _badge(status: str) -> str:
    return f'<span class="badge {e(status)}" data-status="{e(status)}">{e(status)}</span>'


def _page(title: str, body: str, root: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="10">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1><a href="{e(root)}/">colecionador</a> · {e(title)}</h1></header>'
        f"<main>{body}</main></body></html>"
    )


def _table(
    headers: list[str], rows: str, *, table_id: str | None = None, empty: str | None = None
) -> str:
    """A table: a header cell per name, then ``rows`` (``<tr>`` markup), or one row
    spanning every column that says ``empty`` when there are none."""
    if not rows and empty is not None:
        rows = f"<tr><td colspan={len(headers)} class=muted>{empty}</td></tr>"
    head = "".join(f"<th>{h}</th>" for h in headers)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _jobs_table(jobs: list[Job], root: str) -> str:
    rows = "".join(
        f'<tr data-job-id="{j.id}">'
        f'<td class="num"><a href="{e(root)}/ui/jobs/{j.id}">{j.id}</a></td>'
        f'<td class="clip" title="{e(j.batch_id)}">{e(j.batch_id)}</td>'
        f'<td class="clip">{e(j.model_name)}</td><td>{e(j.mode)}</td>'
        f"<td>{_badge(j.status)}</td><td class=num>{_fmt(j.accuracy)}</td>"
        f"<td class=when>{_when(j.created_at)}</td><td class=when>{_when(j.finished_at)}</td>"
        f'<td class="error">{e(j.error) if j.error else ""}</td></tr>'
        for j in jobs
    )
    return _table(
        ["id", "batch", "model", "mode", "status", "accuracy", "created", "finished", "error"],
        rows,
        table_id="jobs",
        empty="no jobs",
    )


def _models_table(models: list[ModelSummary], root: str) -> str:
    rows = "".join(
        f'<tr data-model="{e(m.name)}"><td>{e(m.name)}</td><td class=num>v{m.latest.version}</td>'
        f"<td>{_badge(m.latest.status)}</td><td class=num>{_fmt(m.latest.accuracy)}</td>"
        f"<td class=num>{_fmt(m.latest.precision)}</td><td class=num>{_fmt(m.latest.recall)}</td>"
        f"<td class=num>{m.versions}</td>"
        f"<td class=num>{'v' + str(m.latest_approved) if m.latest_approved else '–'}</td>"
        f'<td><a href="{e(root)}/ui/jobs/{m.latest.job_id}">job {m.latest.job_id}</a></td>'
        f"<td>{_when(m.latest.trained_at)}</td></tr>"
        for m in models
    )
    return _table(
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
        f"<td class=when>{_when(a.moved_at)}</td></tr>"
        for n, a in zip(names, aliases)
    )
    history = "".join(
        f'<tr data-model="{e(m.model_name)}" data-alias="{e(m.alias)}">'
        f"<td class=when>{_when(m.moved_at)}</td><td>{e(m.model_name)}</td><td>{e(m.alias)}</td>"
        f"<td class=num>{'v' + str(m.from_version) if m.from_version else '–'}</td>"
        f"<td class=num>v{m.to_version}</td><td>{e(m.moved_by)}</td>"
        f'<td class="error">{e(m.reason)}</td>'
        f"<td>{_badge('overrode gate') if m.overrode_gate else ''}</td></tr>"
        for m in moves
    )
    return (
        "<h2>Aliases</h2>"
        + _table(
            ["model", "alias", "version", "moved by", "moved"],
            rows,
            table_id="aliases",
            empty="no aliases yet",
        )
        + '<h2>Alias history <span class="muted">(newest first)</span></h2>'
        + _table(
            ["when", "model", "alias", "from", "to", "by", "why", ""],
            history,
            table_id="alias-history",
            empty="no alias moves yet",
        )
    )


def _gate_table(v: VersionDetail, root: str = "") -> str:
    rows = "".join(
        f'<tr data-rule="{e(r.metric)}"><td>{e(r.metric)}</td><td class=num>{_fmt(r.value)}</td>'
        f"<td class=num>{e(r.op)} {_fmt(r.threshold, 2)}</td>"
        f"<td>{_badge('pass' if r.passed else 'fail')}</td></tr>"
        for r in v.gate.rules
    )
    return (
        f'<section class="gate" data-version="{v.version}"><h2>Model {e(v.model_name)} '
        f"v{v.version}: gate {_badge(v.gate.status)}</h2>"
        f'<p><a href="{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}">'
        "model card</a></p>"
        + _table(["rule", "value", "threshold", "outcome"], rows)
        + f'<p class="muted">artifact: {e(v.artifact_uri)}</p></section>'
    )


def _health_section(health: dict[str, Any] | None) -> str:
    if health is None:
        return ""
    items = "".join(
        f'<li data-kind="{e(f["kind"])}">{e(f["message"])}</li>' for f in health.get("findings", [])
    )
    return (
        '<section id="health"><h2>Data health</h2>'
        f'<p class="muted">{health.get("images")} images, {health.get("classes")} classes,'
        f" imbalance {_fmt(health.get('imbalance_ratio'), 1)}</p>"
        + (f"<ul>{items}</ul>" if items else '<p class="muted">no findings</p>')
        + _drift_line(health.get("drift"))
        + _label_conflicts_table(health.get("label_conflicts") or [])
        + "</section>"
    )


def _drift_line(drift: dict[str, Any] | None) -> str:
    """The batch against the production version's data (training/drift.py)."""
    if not drift:
        return ""
    chi = drift.get("chi_square") or {}
    p = chi.get("p_value")
    return (
        f'<p id="drift">Against v{e(drift.get("production_version"))} in production: class '
        f"mix total variation {_fmt(drift.get('total_variation'), 3)}"
        + (f", chi-square p {p:.2g}" if isinstance(p, (int, float)) else "")
        + f", {e(drift.get('leakage_count', 0))} image(s) matching its test split</p>"
    )


def _calibration_section(v: VersionDetail, metrics: dict[str, Any] | None, root: str) -> str:
    """ECE before and after temperature scaling, and the reliability diagram."""
    cal = (metrics or {}).get("calibration")
    if not cal:
        return ""
    src = f"{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}/reliability.png"
    return (
        f'<section class="calibration" data-version="{v.version}">'
        f"<h2>Calibration ({e(v.model_name)} v{v.version}, test split, {cal['n_bins']} bins)</h2>"
        f"<p>ECE {_fmt(cal['ece_before'])} before, {_fmt(cal['ece_after'])} after "
        f"temperature scaling (T = {cal['temperature']:.3g}, fitted on "
        f"{e(cal.get('fitted_on') or str(cal['validation_images']) + ' validation images')}; "
        "every predict path applies it)</p>"
        f'<img class="plot" alt="reliability diagram" src="{src}"></section>'
    )


def _label_issues_section(report: dict[str, Any] | None, job_id: int, root: str) -> str:
    """label_check: the images worth relabelling first, and their picture."""
    if report is None:
        return ""
    if report.get("error"):
        return (
            '<section id="label-issues"><h2>Label issues</h2>'
            f'<p class="error">the check failed: {e(report["error"])}</p></section>'
        )
    rows = "".join(
        f"<tr><td class=num>{i['rank']}</td><td>{e(i['path'])}</td><td>{e(i['given_label'])}</td>"
        f"<td>{e(i['likely_label'])}</td><td class=num>{_fmt(i['confidence'], 3)}</td>"
        f"<td class=num>{_fmt(i['given_label_prob'], 3)}</td></tr>"
        for i in report.get("issues", [])
    )
    img = (
        f'<img class="plot" alt="label issues" src="{e(root)}/ui/jobs/{job_id}/label_issues.png">'
        if rows
        else ""
    )
    return (
        '<section id="label-issues"><h2>Label issues</h2>'
        f'<p class="muted">{e(report.get("issues_found"))} likely mislabelled among '
        f"{e(report.get('images_checked'))} train + val images; {e(report.get('source'))}</p>"
        + img
        + _table(
            ["rank", "image", "given", "likely", "confidence", "p(given)"],
            rows,
            table_id="label-issues-table",
            empty="no label issues found",
        )
        + "</section>"
    )


def _label_conflicts_table(conflicts: list[dict[str, Any]]) -> str:
    """The same picture under two classes: both paths, both classes, how it was found."""
    if not conflicts:
        return ""
    rows = "".join(
        f"<tr><td>{e(c['a'])}</td><td>{e(c['a_class'])}</td><td>{e(c['b'])}</td>"
        f"<td>{e(c['b_class'])}</td><td>{e(c['how'])}</td></tr>"
        for c in conflicts
    )
    return "<h3>Label conflicts</h3>" + _table(
        ["image", "class", "same picture", "class", "found by"], rows, table_id="label-conflicts"
    )


def _mlflow_line(backlog: dict[str, Any] | None) -> str:
    """The line "MLflow: n records pending" (repo.mlflow_backlog) of a tracked job."""
    if not backlog or not backlog["records"]:
        return ""
    n = backlog["pending"]
    text = f"{n} record{'s' if n != 1 else ''} pending" if n else "every record written"
    if backlog["refused"]:
        text += f", {backlog['refused']} refused"
    if backlog["error"] and (n or backlog["refused"]):
        text += f" (last error: {backlog['error']})"
    return f'<p id="mlflow">MLflow: {e(text)}</p>'


def _job_page(
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
    info = [
        ("batch", job.batch_id),
        ("model", job.model_name),
        ("mode", job.mode),
        ("dataset", job.dataset_uri),
        ("images", job.total_images),
        ("workers", job.num_workers),
        ("gpu", job.use_gpu),
        ("Ray job", job.ray_job_id),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("accuracy", _fmt(job.accuracy)),
        ("training time", f"{job.training_time_s:.1f} s" if job.training_time_s else None),
    ]
    body = (
        f"<p>Status {_badge(job.status)}</p>"
        + (f'<p class="error" id="error">{e(job.error)}</p>' if job.error else "")
        + "<dl>"
        + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in info)
        + "</dl>"
        + _mlflow_line(mlflow)
    )
    body += "".join(_gate_table(v, root) for v in versions) or (
        '<h2>Gate</h2><p class="muted" id="no-gate">no model version (yet)</p>'
    )
    body += _health_section(health)
    body += _label_issues_section(label_issues, job.id, root)
    body += label_next  # a predict job's "What to label next" (label_next_page.py)
    if rows:
        body += (
            f'<h2>Training curves</h2><img class="plot" id="curves" alt="training curves" '
            f'src="{e(root)}/ui/jobs/{job.id}/curves.png">'
        )
        epochs = "".join(
            f"<tr><td class=num>{r.epoch}</td><td class=num>{r.phase}</td>"
            f"<td class=num>{_fmt(r.loss)}</td><td class=num>{_fmt(r.accuracy)}</td>"
            f"<td class=num>{_fmt(r.val_loss)}</td><td class=num>{_fmt(r.val_accuracy)}</td>"
            f"<td class=num>{_fmt(r.lr, 6) if r.lr is None else f'{r.lr:.2g}'}</td>"
            f"<td class=num>{_fmt(r.epoch_time_s, 1)}</td></tr>"
            for r in rows
        )
        body += "<h2>Epochs</h2>" + _table(
            ["epoch", "phase", "loss", "accuracy", "val loss", "val accuracy", "lr", "time (s)"],
            epochs,
            table_id="epochs",
        )
    else:
        body += '<h2>Training curves</h2><p class="muted" id="no-curves">no epochs recorded yet</p>'
    for v in versions:
        body += (
            f"<h2>Confusion matrix ({e(v.model_name)} v{v.version}, test split)</h2>"
            f'<img class="plot" alt="confusion matrix" '
            f'src="{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}/'
            'confusion_matrix.png">'
        )
    for v, m in zip(versions, version_metrics or []):
        body += _calibration_section(v, m, root)
    body += (
        "<h2>Hyperparameters</h2><details><summary>every effective value</summary><pre>"
        + e(json.dumps(job.hyperparameters, indent=2, sort_keys=True))
        + "</pre></details>"
    )
    return _page(f"job {job.id}", body, root, refresh=job.status not in FINAL_STATUSES)


# ------------------------------------------------------------------------ routes
def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


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
    root = _root(request)
    filters = " ".join(f'<a href="{e(root)}/?status={s}">{_badge(s)}</a>' for s in JOB_STATUSES)
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
    return HTMLResponse(_page("status", body, root, refresh=active))


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: JobId, db: DbDep, store: StoreDep) -> HTMLResponse:
    def load(s: Any) -> tuple[JobDetail | None, list[MetricRow], list[VersionDetail], Any]:
        job = reads.job_detail(s, job_id)
        if job is None:
            return None, [], [], None
        rows, versions = reads.metric_rows(s, job_id), reads.job_versions(s, job_id)
        return job, rows, versions, repo.mlflow_backlog(s, job_id)

    job, rows, versions, mlflow = await db(load)
    root = _root(request)
    if job is None:
        return HTMLResponse(_page("not found", f"<p>No job {job_id}.</p>", root), status_code=404)
    health = await asyncio.to_thread(store.json, report_key(job_id, "health.json"))
    labels = await asyncio.to_thread(store.json, report_key(job_id, LABEL_ISSUES_FILE))
    metrics = [
        await asyncio.to_thread(
            store.json, version_prefix(v.model_name, v.version) + "metrics.json"
        )
        for v in versions
    ]
    label_next = ""
    if job.mode == "predict":
        from services.api.label_next_page import section  # it draws on this module

        label_next = await section(store, job_id, root)
    page = _job_page(job, rows, versions, root, health, metrics, labels, mlflow, label_next)
    return HTMLResponse(page)


async def _store_png(store: StoreDep, key: str) -> Response:
    try:
        png = await asyncio.to_thread(store.bytes, key)
    except Exception:  # noqa: BLE001 - absent, or the store cannot be reached
        raise HTTPException(404, f"{key} is not in the store") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/ui/jobs/{job_id}/label_issues.png")
async def job_page_label_issues(job: JobDep, store: StoreDep) -> Response:
    """label_check's picture of the top label issues (reports/job-<id>/)."""
    return await _store_png(store, report_key(job.id, LABEL_ISSUES_PNG))


@router.get("/ui/models/{name}/versions/{version}/reliability.png")
async def job_page_reliability(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    """The version's reliability diagram (before / after temperature scaling)."""
    if await db(repo.get_version, name, version) is None:
        raise HTTPException(404, f"no version {version} of model {name}")
    return await _store_png(store, version_prefix(name, version) + RELIABILITY_FILE)


@router.get("/ui/jobs/{job_id}/curves.png")
async def job_page_curves(job: JobDep, db: DbDep) -> Response:
    return await reads.curves_png(db, job.id)


@router.get("/ui/models/{name}/versions/{version}/confusion_matrix.png")
async def job_page_confusion(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    return await reads.confusion_png(db, store, name, version)
