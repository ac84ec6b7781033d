"""The HTTP API of DESIGN.md and a status page: a FastAPI app served by Ray Serve.

``create_app(settings)`` builds the app (testable on its own); ``api_deployment(settings)``
wraps it as ``@serve.deployment @serve.ingress(app)``; ``colecionador serve`` deploys it.

Reads (``GET``) are open unless ``api_read_token`` is set; then the read token or the write
token is needed, as ``Authorization: Bearer <token>`` (the HTML pages also take HTTP Basic
with the token as the password, so a browser can log in). Writes need
``Authorization: Bearer <api_token>``; with no ``api_token`` configured every write is
refused (default-deny). Errors are JSON with a ``detail``.

Every blocking call (database, broker, object store, Ray's job server, matplotlib) runs
off the event loop with ``asyncio.to_thread``; routes and dependencies are ``async``
(a sync one costs Serve a thread-pool hop per request).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import logging
import math
import secrets
import threading
import time
from datetime import datetime
from typing import Annotated, Any, Callable, Literal, TypeVar

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.config import Settings
from services.db.models import FINAL_STATUSES, JOB_STATUSES
from services.db.repo import json_safe
from services.messages import MAX_INT, TrainingRequest
from services.storage import read_json, report_key, version_prefix

log = logging.getLogger("colecionador.api")

DEPLOYMENT_NAME = "colecionador-api"
CANCEL_WAIT_S = 30.0  # how long POST /jobs/{id}/cancel waits for the Ray job to end
PNG = "image/png"
T = TypeVar("T")


# ------------------------------------------------------------------ response models
def _finite(v: float | None) -> float | None:
    """NaN / inf (a diverged epoch) are not JSON: report them as null."""
    return v if v is None or math.isfinite(v) else None


Num = Annotated[float | None, AfterValidator(_finite)]
JobStatus = Literal["queued", "training", "evaluating", "success", "failed", "cancelled"]
StatusFilter = Literal["", "queued", "training", "evaluating", "success", "failed", "cancelled"]
assert set(JobStatus.__args__) == set(JOB_STATUSES)  # type: ignore[attr-defined]

# path parameters (module level: the annotations are resolved by name)
JobId = Annotated[int, Path(ge=1, le=MAX_INT, description="the job's id")]
ModelName = Annotated[str, Path(pattern=r"^[\w.\-]+$", max_length=200)]
VersionNo = Annotated[int, Path(ge=1, le=MAX_INT)]
BatchId = Annotated[str, Path(pattern=r"^[^\x00-\x1f\x7f/]+$", max_length=200)]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class Job(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: str
    status: JobStatus
    mode: str
    model_name: str
    dataset_uri: str
    total_images: int | None = None
    ray_job_id: str | None = None
    error: str | None = None
    accuracy: Num = None
    training_time_s: Num = None
    num_workers: int | None = None
    use_gpu: bool | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class VersionRef(BaseModel):
    model_name: str
    version: int
    status: Literal["approved", "rejected"]


class JobDetail(Job):
    hyperparameters: dict[str, Any] = Field(description="every effective value")
    versions: list[VersionRef] = Field(description="the model versions this job made")


class JobPage(BaseModel):
    items: list[Job]
    total: int = Field(description="jobs matching the filter")
    limit: int
    offset: int


class MetricRow(BaseModel):
    epoch: int
    phase: int
    loss: Num = None
    accuracy: Num = None
    val_loss: Num = None
    val_accuracy: Num = None
    lr: Num = None
    epoch_time_s: Num = None


class Submitted(BaseModel):
    job_id: int
    batch_id: str
    status: JobStatus
    created: bool = Field(description="false: a known batch_id, the existing job")
    published: bool = Field(description="the request went out on the requests queue")


class Cancelled(BaseModel):
    job_id: int
    status: JobStatus
    ray_job_id: str | None = None
    ray_job_status: str | None = Field(None, description="the Ray job's status after the stop")


class GateRuleOut(BaseModel):
    metric: str
    threshold: float
    value: Num
    passed: bool


class Gate(BaseModel):
    status: Literal["approved", "rejected"]
    rules: list[GateRuleOut]


class VersionSummary(BaseModel):
    model_name: str
    version: int
    job_id: int
    status: Literal["approved", "rejected"]
    accuracy: Num
    precision: Num
    recall: Num
    f1: Num
    roc_auc: Num = None
    artifact_uri: str
    trained_at: datetime


class VersionDetail(VersionSummary):
    batch_id: str | None = None
    metrics: dict[str, Num]
    gate: Gate
    artifacts: dict[str, str] = Field(description="URIs of the files of this version")
    evaluation: dict[str, Any] | None = Field(
        None, description="metrics.json's test section from the store: per-class figures "
                          "and the confusion matrix (null if the store cannot be read)")
    evaluation_error: str | None = None
    errors: dict[str, Any] | None = Field(
        None, description="errors.json: the most-confused class pairs and the test images "
                          "wrong with the highest confidence (null if not stored)")


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: VersionSummary
    latest_approved: int | None = Field(None, description="the newest approved version")


class ErrorOut(BaseModel):
    detail: Any


ARTIFACTS = ("model.pt", "metrics.json", "curves.png", "confusion_matrix.png", "health.json",
             "errors.json")


def _version_summary(mv: Any) -> VersionSummary:
    return VersionSummary(model_name=mv.model_name, version=mv.version, job_id=mv.job_id,
                          status=mv.status, accuracy=mv.accuracy, precision=mv.precision,
                          recall=mv.recall, f1=mv.f1, roc_auc=mv.roc_auc,
                          artifact_uri=mv.model_path, trained_at=mv.trained_at)


def _gate(raw: dict[str, Any] | None, status: str) -> Gate:
    raw = raw or {}
    return Gate(status=raw.get("status", status),
                rules=[GateRuleOut(**r) for r in raw.get("rules", [])])


# ----------------------------------------------------------------------- auth
def _matches(given: str, *tokens: Any) -> bool:
    ok = False
    for token in tokens:
        if token is not None:  # compare against every token: no early exit on a match
            ok |= secrets.compare_digest(given.encode(), token.get_secret_value().encode())
    return ok


def _presented(request: Request, basic: bool) -> str | None:
    """The token in ``Authorization: Bearer <token>`` (or, with ``basic``, the password of
    ``Authorization: Basic``), or None."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if basic and scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


# ------------------------------------------------------------------------ HTML
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
.failed,.rejected,.fail{background:#fecaca}.cancelled{background:#d1d5db}
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
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
            f'<header><h1><a href="{e(root)}/">colecionador</a> · {e(title)}</h1></header>'
            f"<main>{body}</main></body></html>")


def _table(headers: list[str], rows: str, *, table_id: str | None = None,
           empty: str | None = None) -> str:
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
        f'<td class="error">{e(j.error) if j.error else ""}</td></tr>' for j in jobs)
    return _table(["id", "batch", "model", "mode", "status", "accuracy", "created",
                   "finished", "error"], rows, table_id="jobs", empty="no jobs")


def _models_table(models: list[ModelSummary], root: str) -> str:
    rows = "".join(
        f'<tr data-model="{e(m.name)}"><td>{e(m.name)}</td><td class=num>v{m.latest.version}</td>'
        f"<td>{_badge(m.latest.status)}</td><td class=num>{_fmt(m.latest.accuracy)}</td>"
        f"<td class=num>{_fmt(m.latest.precision)}</td><td class=num>{_fmt(m.latest.recall)}</td>"
        f"<td class=num>{m.versions}</td>"
        f"<td class=num>{'v' + str(m.latest_approved) if m.latest_approved else '–'}</td>"
        f'<td><a href="{e(root)}/ui/jobs/{m.latest.job_id}">job {m.latest.job_id}</a></td>'
        f"<td>{_when(m.latest.trained_at)}</td></tr>" for m in models)
    return _table(["model", "latest", "gate", "accuracy", "precision", "recall", "versions",
                   "latest approved", "job", "trained"], rows, table_id="models",
                  empty="no model versions yet")


def _gate_table(v: VersionDetail) -> str:
    rows = "".join(
        f'<tr data-rule="{e(r.metric)}"><td>{e(r.metric)}</td><td class=num>{_fmt(r.value)}</td>'
        f"<td class=num>&gt; {_fmt(r.threshold, 2)}</td>"
        f"<td>{_badge('pass' if r.passed else 'fail')}</td></tr>" for r in v.gate.rules)
    return (f'<section class="gate" data-version="{v.version}"><h2>Model {e(v.model_name)} '
            f"v{v.version}: gate {_badge(v.gate.status)}</h2>"
            + _table(["rule", "value", "threshold", "outcome"], rows) +
            f'<p class="muted">artifact: {e(v.artifact_uri)}</p></section>')


def _health_section(health: dict[str, Any] | None) -> str:
    if health is None:
        return ""
    items = "".join(f'<li data-kind="{e(f["kind"])}">{e(f["message"])}</li>'
                    for f in health.get("findings", []))
    return ('<section id="health"><h2>Data health</h2>'
            f'<p class="muted">{health.get("images")} images, {health.get("classes")} classes,'
            f' imbalance {_fmt(health.get("imbalance_ratio"), 1)}</p>'
            + (f"<ul>{items}</ul>" if items else '<p class="muted">no findings</p>')
            + _label_conflicts_table(health.get("label_conflicts") or [])
            + "</section>")


def _label_conflicts_table(conflicts: list[dict[str, Any]]) -> str:
    """The same picture under two classes: both paths, both classes, how it was found."""
    if not conflicts:
        return ""
    rows = "".join(f"<tr><td>{e(c['a'])}</td><td>{e(c['a_class'])}</td><td>{e(c['b'])}</td>"
                   f"<td>{e(c['b_class'])}</td><td>{e(c['how'])}</td></tr>" for c in conflicts)
    return ("<h3>Label conflicts</h3>"
            + _table(["image", "class", "same picture", "class", "found by"], rows,
                     table_id="label-conflicts"))


def _job_page(job: JobDetail, rows: list[MetricRow], versions: list[VersionDetail],
              root: str, health: dict[str, Any] | None = None) -> str:
    info = [("batch", job.batch_id), ("model", job.model_name), ("mode", job.mode),
            ("dataset", job.dataset_uri), ("images", job.total_images),
            ("workers", job.num_workers), ("gpu", job.use_gpu), ("Ray job", job.ray_job_id),
            ("created", _when(job.created_at)), ("started", _when(job.started_at)),
            ("finished", _when(job.finished_at)), ("accuracy", _fmt(job.accuracy)),
            ("training time", f"{job.training_time_s:.1f} s" if job.training_time_s else None)]
    body = (f'<p>Status {_badge(job.status)}</p>'
            + (f'<p class="error" id="error">{e(job.error)}</p>' if job.error else "")
            + "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in info) + "</dl>")
    body += "".join(_gate_table(v) for v in versions) or (
        '<h2>Gate</h2><p class="muted" id="no-gate">no model version (yet)</p>')
    body += _health_section(health)
    if rows:
        body += (f'<h2>Training curves</h2><img class="plot" id="curves" alt="training curves" '
                 f'src="{e(root)}/ui/jobs/{job.id}/curves.png">')
        epochs = "".join(
            f"<tr><td class=num>{r.epoch}</td><td class=num>{r.phase}</td>"
            f"<td class=num>{_fmt(r.loss)}</td><td class=num>{_fmt(r.accuracy)}</td>"
            f"<td class=num>{_fmt(r.val_loss)}</td><td class=num>{_fmt(r.val_accuracy)}</td>"
            f"<td class=num>{_fmt(r.lr, 6) if r.lr is None else f'{r.lr:.2g}'}</td>"
            f"<td class=num>{_fmt(r.epoch_time_s, 1)}</td></tr>" for r in rows)
        body += "<h2>Epochs</h2>" + _table(["epoch", "phase", "loss", "accuracy", "val loss",
                                            "val accuracy", "lr", "time (s)"], epochs,
                                           table_id="epochs")
    else:
        body += '<h2>Training curves</h2><p class="muted" id="no-curves">no epochs recorded yet</p>'
    for v in versions:
        body += (f"<h2>Confusion matrix ({e(v.model_name)} v{v.version}, test split)</h2>"
                 f'<img class="plot" alt="confusion matrix" '
                 f'src="{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}/'
                 'confusion_matrix.png">')
    body += ("<h2>Hyperparameters</h2><details><summary>every effective value</summary><pre>"
             + e(json.dumps(job.hyperparameters, indent=2, sort_keys=True)) + "</pre></details>")
    return _page(f"job {job.id}", body, root, refresh=job.status not in FINAL_STATUSES)


# ------------------------------------------------------------------------ the app
def create_app(settings: Settings, *, cancel_wait_s: float = CANCEL_WAIT_S) -> FastAPI:
    """The FastAPI app of DESIGN.md ("HTTP") for ``settings``."""
    from sqlalchemy import text
    from sqlalchemy.exc import DataError, OperationalError

    from services.db import repo
    from services.db.session import session_factory
    from services.jobs import create_job, prepare_database

    app = FastAPI(
        title="colecionador",
        version="0.1.0",
        description="Training jobs, their per-epoch metrics, and model versions with the "
                    "quality gate's outcome. Writes need `Authorization: Bearer <token>` "
                    "(COLECIONADOR_API_TOKEN); reads are open unless "
                    "COLECIONADOR_API_READ_TOKEN is set.",
        responses={422: {"model": ErrorOut, "description": "invalid request"}},
    )
    plot_lock = threading.Lock()  # pyplot keeps global state: one figure at a time
    store_box: dict[str, Any] = {}

    # ------------------------------------------------------------- blocking helpers
    def in_session(fn: Callable[..., T], *args: Any) -> T:
        prepare_database(settings)
        with session_factory(settings.db_url)() as s:
            return fn(s, *args)

    async def db(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(in_session, fn, *args)

    def store() -> Any:
        if "store" not in store_box:
            from services.storage import open_store
            store_box["store"] = open_store(settings)
        return store_box["store"]

    def store_bytes(key: str) -> bytes:
        return store().get_bytes(key)

    # ----------------------------------------------------------------- errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = []
        for err in exc.errors():
            loc, kind = list(err.get("loc", ())), str(err.get("type", "value_error"))
            msg = str(err.get("msg", "invalid"))
            if kind == "extra_forbidden":  # as the CLI and the dead-letter reasons say it
                msg = ("unknown hyperparameter" if "hyperparameters" in loc[:2]
                       else "unknown field")
            detail.append({"loc": loc, "msg": msg, "type": kind})
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(OperationalError)
    async def _db_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse({"detail": "the database is unavailable; try again"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"},
                            status_code=500)

    # ------------------------------------------------------------------- auth
    def read_guard(basic: bool) -> Callable[..., Any]:
        async def guard(request: Request) -> None:
            if settings.api_read_token is None:
                return
            challenge = 'Basic realm="colecionador"' if basic else "Bearer"
            token = _presented(request, basic)
            if token is None:
                raise HTTPException(401, "a token is needed to read: Authorization: Bearer "
                                    "<token>", headers={"WWW-Authenticate": challenge})
            if not _matches(token, settings.api_read_token, settings.api_token):
                raise HTTPException(403, "invalid token")
        return guard

    read = Depends(read_guard(basic=False))
    read_page = Depends(read_guard(basic=True))
    bearer = HTTPBearer(auto_error=False, description="COLECIONADOR_API_TOKEN")

    async def require_write(creds: HTTPAuthorizationCredentials | None = Depends(bearer)
                            ) -> None:
        if settings.api_token is None:
            raise HTTPException(403, "writes are disabled: no API token is configured "
                                "(set COLECIONADOR_API_TOKEN on the server)")
        if creds is None or not creds.credentials:
            raise HTTPException(401, "a token is needed: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        if not _matches(creds.credentials, settings.api_token):
            raise HTTPException(403, "invalid token")

    write = Depends(require_write)

    def not_found(what: str) -> HTTPException:
        return HTTPException(404, f"no {what}")

    # ----------------------------------------------------------- read queries
    def q_job(s: Any, job_id: int) -> JobDetail | None:
        job = repo.get_job(s, job_id)
        if job is None:
            return None
        return JobDetail(**Job.model_validate(job).model_dump(),
                         hyperparameters=repo.hyperparameters(s, job_id),
                         versions=[VersionRef(model_name=v.model_name, version=v.version,
                                              status=v.status)
                                   for v in repo.job_versions(s, job_id)])

    def q_job_by_batch(s: Any, batch_id: str) -> JobDetail | None:
        job = repo.get_job_by_batch(s, batch_id)
        return None if job is None else q_job(s, job.id)

    def q_jobs(s: Any, status: str | None, limit: int, offset: int) -> JobPage:
        jobs = repo.list_jobs(s, status=status, limit=limit, offset=offset)
        return JobPage(items=[Job.model_validate(j) for j in jobs],
                       total=repo.count_jobs(s, status), limit=limit, offset=offset)

    def q_metrics(s: Any, job_id: int) -> list[MetricRow] | None:
        if repo.get_job(s, job_id) is None:
            return None
        return [MetricRow(**r) for r in repo.epoch_rows(s, job_id)]

    def q_models(s: Any) -> list[ModelSummary]:
        return [ModelSummary(name=m["name"], versions=m["versions"],
                             latest=_version_summary(m["latest"]),
                             latest_approved=m["latest_approved"])
                for m in repo.list_models(s)]

    def q_versions(s: Any, name: str) -> list[VersionSummary]:
        return [_version_summary(v) for v in repo.versions(s, name)]

    def version_detail(s: Any, mv: Any, with_evaluation: bool) -> VersionDetail:
        job = repo.get_job(s, mv.job_id)
        base = mv.model_path.rsplit("/", 1)[0]
        detail = VersionDetail(
            **_version_summary(mv).model_dump(), batch_id=job.batch_id if job else None,
            metrics={"accuracy": mv.accuracy, "precision": mv.precision, "recall": mv.recall,
                     "f1": mv.f1, "roc_auc": mv.roc_auc},
            gate=_gate(mv.gate, mv.status),
            artifacts={name: f"{base}/{name}" for name in ARTIFACTS})
        if with_evaluation:
            prefix = version_prefix(mv.model_name, mv.version)
            try:
                detail.evaluation = json_safe(
                    json.loads(store_bytes(prefix + "metrics.json")).get("test"))
            except Exception as exc:  # noqa: BLE001 - the row still answers
                detail.evaluation_error = f"{type(exc).__name__}: {exc}"[:500]
            detail.errors = stored_json(prefix + "errors.json")
        return detail

    def stored_json(key: str) -> dict[str, Any] | None:
        """A JSON report from the store with NaN / inf as null, or None when it is not
        there or the store cannot be reached."""
        try:
            return json_safe(read_json(store(), key))
        except Exception:  # noqa: BLE001 - the store cannot be opened
            return None

    def q_version(s: Any, name: str, version: int) -> VersionDetail | None:
        mv = repo.get_version(s, name, version)
        return None if mv is None else version_detail(s, mv, True)

    def q_job_versions(s: Any, job_id: int) -> list[VersionDetail]:
        return [version_detail(s, mv, False) for mv in repo.job_versions(s, job_id)]

    def render_curves(job_id: int) -> bytes | None:
        rows = in_session(repo.epoch_rows, job_id)
        if not rows:
            return None
        from training.plots import curves_png
        clean = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]
        with plot_lock:
            return curves_png(clean, f"job {job_id}")

    async def curves(job_id: int) -> Response:
        if await db(repo.get_job, job_id) is None:
            raise not_found(f"job {job_id}")
        png = await asyncio.to_thread(render_curves, job_id)
        if png is None:
            raise HTTPException(404, f"job {job_id} has no epochs recorded yet")
        return Response(png, media_type=PNG, headers={"Cache-Control": "no-cache"})

    async def confusion(name: str, version: int) -> Response:
        if await db(repo.get_version, name, version) is None:
            raise not_found(f"version {version} of model {name}")
        key = version_prefix(name, version) + "confusion_matrix.png"
        try:
            png = await asyncio.to_thread(store_bytes, key)
        except Exception as exc:  # noqa: BLE001 - a store error of any kind
            raise HTTPException(502, f"cannot read {key} from the store: {exc}") from None
        return Response(png, media_type=PNG)

    png_response = {200: {"content": {PNG: {}}, "description": "a PNG image"},
                    404: {"model": ErrorOut}}

    # --------------------------------------------------------------- routes: read
    @app.get("/healthz", response_model=Health, tags=["health"],
             responses={503: {"model": ErrorOut}})
    async def healthz() -> Health:
        """Liveness and the database's answer to ``SELECT 1``."""
        await db(lambda s: s.execute(text("SELECT 1")))
        return Health(status="ok", database="ok")

    @app.get("/jobs", response_model=JobPage, dependencies=[read], tags=["jobs"])
    async def list_jobs(
            status: Annotated[StatusFilter | None, Query(
                description="only jobs in this status (empty: all)")] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 50,
            offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0) -> JobPage:
        """Jobs, newest first."""
        return await db(q_jobs, status or None, limit, offset)

    @app.get("/jobs/by-batch/{batch_id}", response_model=JobDetail, dependencies=[read],
             tags=["jobs"], responses={404: {"model": ErrorOut}})
    async def job_by_batch(batch_id: BatchId) -> JobDetail:
        job = await db(q_job_by_batch, batch_id)
        if job is None:
            raise not_found(f"job for batch {batch_id}")
        return job

    @app.get("/jobs/{job_id}", response_model=JobDetail, dependencies=[read], tags=["jobs"],
             responses={404: {"model": ErrorOut}})
    async def get_job(job_id: JobId) -> JobDetail:
        job = await db(q_job, job_id)
        if job is None:
            raise not_found(f"job {job_id}")
        return job

    @app.get("/jobs/{job_id}/metrics", response_model=list[MetricRow], dependencies=[read],
             tags=["jobs"], responses={404: {"model": ErrorOut}})
    async def job_metrics(job_id: JobId) -> list[MetricRow]:
        """One row per epoch (both phases), in order."""
        rows = await db(q_metrics, job_id)
        if rows is None:
            raise not_found(f"job {job_id}")
        return rows

    @app.get("/jobs/{job_id}/curves.png", response_class=Response, dependencies=[read],
             tags=["jobs"], responses=png_response)
    async def job_curves(job_id: JobId) -> Response:
        """Loss, accuracy and learning rate per epoch, drawn from the recorded rows."""
        return await curves(job_id)

    @app.get("/jobs/{job_id}/health", response_model=dict[str, Any], dependencies=[read],
             tags=["jobs"], responses={404: {"model": ErrorOut}})
    async def job_health(job_id: JobId) -> dict[str, Any]:
        """The data health report written before training: images per class, imbalance,
        unreadable files, exact and near duplicates, leakage across the split, sizes,
        channels, and the findings (kind, message, count)."""
        if await db(repo.get_job, job_id) is None:
            raise not_found(f"job {job_id}")
        report = await asyncio.to_thread(stored_json, report_key(job_id, "health.json"))
        if report is None:
            raise HTTPException(404, f"job {job_id} has no health report (yet)")
        return report

    @app.get("/models", response_model=list[ModelSummary], dependencies=[read],
             tags=["models"])
    async def list_models() -> list[ModelSummary]:
        """Every model with its latest version and gate verdict."""
        return await db(q_models)

    @app.get("/models/{name}/versions", response_model=list[VersionSummary],
             dependencies=[read], tags=["models"], responses={404: {"model": ErrorOut}})
    async def model_versions(name: ModelName) -> list[VersionSummary]:
        found = await db(q_versions, name)
        if not found:
            raise not_found(f"model {name}")
        return found

    @app.get("/models/{name}/versions/{version}", response_model=VersionDetail,
             dependencies=[read], tags=["models"], responses={404: {"model": ErrorOut}})
    async def model_version(name: ModelName, version: VersionNo) -> VersionDetail:
        """Metrics, the gate rule by rule, and the artifact URIs of one version."""
        found = await db(q_version, name, version)
        if found is None:
            raise not_found(f"version {version} of model {name}")
        return found

    @app.get("/models/{name}/versions/{version}/confusion_matrix.png", response_class=Response,
             dependencies=[read], tags=["models"], responses=png_response)
    async def model_confusion(name: ModelName, version: VersionNo) -> Response:
        """The test split's confusion matrix, as stored with the version."""
        return await confusion(name, version)

    # -------------------------------------------------------------- routes: write
    @app.post("/jobs", status_code=202, response_model=Submitted, dependencies=[write],
              tags=["jobs"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                        503: {"model": ErrorOut}})
    async def submit_job(request: Annotated[TrainingRequest, Body()]) -> Submitted:
        """Record the request (a known batch_id returns its job, ``created: false``) and
        publish it on the requests queue, where the ingress submits it as a Ray job. It
        is published when the job is new, or still queued without a Ray job (an earlier
        publish may have failed); never for a job that runs or has finished."""
        try:
            job, created = await asyncio.to_thread(create_job, settings, request)
        except DataError as exc:
            raise HTTPException(422, f"the database refused a value: "
                                f"{str(exc.orig).strip().splitlines()[0]}") from None
        publish = created or (job.status == "queued" and job.ray_job_id is None)
        if publish:
            from services.ingress import publish_request
            try:
                await asyncio.to_thread(publish_request, settings, request.to_json())
            except Exception as exc:  # noqa: BLE001 - the broker is down: the client retries
                log.error("job %s recorded, not published: %s", job.id, exc)
                raise HTTPException(
                    503, f"job {job.id} is recorded but the request could not be published on "
                         f"{settings.requests_queue} ({type(exc).__name__}); POST it again",
                    headers={"Retry-After": "5"}) from None
        return Submitted(job_id=job.id, batch_id=job.batch_id, status=job.status,
                         created=created, published=publish)

    def stop_ray_job(ray_job_id: str) -> str | None:
        """Stop the Ray job and wait (bounded) until Ray reports it ended: ``stop_job`` can
        return True while a pending job keeps going (ray #58353), so the real status is
        checked, and the stop repeated while the job has not ended. None: Ray does not
        know the job. Raises TimeoutError if it did not end within ``cancel_wait_s``."""
        from services.ingress import JobSubmitter, job_missing
        client = JobSubmitter(settings).client
        deadline = time.monotonic() + cancel_wait_s
        next_stop = 0.0
        while True:
            try:
                if time.monotonic() >= next_stop:
                    client.stop_job(ray_job_id)
                    next_stop = time.monotonic() + 2.0
                status = client.get_job_status(ray_job_id)
            except RuntimeError as exc:
                if job_missing(exc):
                    return None
                raise
            if status.is_terminal():
                return status.value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Ray job {ray_job_id} is still {status.value} "
                                   f"{cancel_wait_s:.0f} s after the stop request")
            time.sleep(0.2)

    @app.post("/jobs/{job_id}/cancel", response_model=Cancelled, dependencies=[write],
              tags=["jobs"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                        404: {"model": ErrorOut}, 409: {"model": ErrorOut},
                                        502: {"model": ErrorOut}, 504: {"model": ErrorOut}})
    async def cancel_job(job_id: JobId) -> Cancelled:
        """Cancel a job: a queued job that has no Ray job yet is marked ``cancelled``;
        otherwise its Ray job is stopped, and once Ray reports it ended the job is marked
        ``cancelled``. A finished job (success, failed, cancelled) answers 409."""
        job = await db(repo.get_job, job_id)
        if job is None:
            raise not_found(f"job {job_id}")
        if job.status in FINAL_STATUSES:
            raise HTTPException(409, f"job {job_id} has already ended: {job.status}")
        if job.ray_job_id is None and job.status == "queued":
            if await db(lambda s: repo.cancel_job(s, job_id, error="cancelled over HTTP",
                                                  only_if_queued_without_ray_job=True)):
                return Cancelled(job_id=job_id, status="cancelled")
            job = await db(repo.get_job, job_id)  # submitted just now: stop its Ray job
            if job.status in FINAL_STATUSES:
                raise HTTPException(409, f"job {job_id} has already ended: {job.status}")
        if job.ray_job_id is None:
            raise HTTPException(409, f"job {job_id} is {job.status} outside a Ray job (a local "
                                "`colecionador train`?): it cannot be stopped from here")
        try:
            ray_status = await asyncio.to_thread(stop_ray_job, job.ray_job_id)
        except TimeoutError as exc:
            raise HTTPException(504, f"{exc}; the job is not marked cancelled, try again") \
                from None
        except Exception as exc:  # noqa: BLE001 - the job server is unreachable
            raise HTTPException(502, f"cannot stop Ray job {job.ray_job_id}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from None
        if not await db(lambda s: repo.cancel_job(
                s, job_id, error=f"cancelled over HTTP (Ray job {ray_status or 'gone'})")):
            job = await db(repo.get_job, job_id)
            raise HTTPException(409, f"job {job_id} has already ended: {job.status}")
        return Cancelled(job_id=job_id, status="cancelled", ray_job_id=job.ray_job_id,
                         ray_job_status=ray_status)

    # ---------------------------------------------------------- the status page
    def root_of(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def home_data(status: str | None) -> tuple[JobPage, list[ModelSummary]]:
        def both(s: Any) -> tuple[JobPage, list[ModelSummary]]:
            return q_jobs(s, status, 100, 0), q_models(s)
        return in_session(both)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[read_page])
    async def home(request: Request, status: StatusFilter | None = None) -> HTMLResponse:
        status = status or None
        page, models = await asyncio.to_thread(home_data, status)
        root = root_of(request)
        filters = " ".join(
            f'<a href="{e(root)}/?status={s}">{_badge(s)}</a>' for s in JOB_STATUSES)
        shown = f"{len(page.items)} of {page.total}" + (f" {e(status)}" if status else "")
        body = ("<h2>Models: latest version and gate verdict</h2>" + _models_table(models, root)
                + f'<h2>Jobs <span class="muted">({shown}, newest first)</span></h2>'
                + f'<p class="filters">filter: <a href="{e(root)}/">all</a> {filters}</p>'
                + _jobs_table(page.items, root)
                + f'<p class="muted">API: <a href="{e(root)}/docs">{e(root)}/docs</a></p>')
        active = any(j.status not in FINAL_STATUSES for j in page.items)
        return HTMLResponse(_page("status", body, root, refresh=active))

    @app.get("/ui/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[read_page])
    async def job_page(request: Request, job_id: JobId) -> HTMLResponse:
        def load(s: Any) -> tuple[JobDetail | None, list[MetricRow], list[VersionDetail]]:
            job = q_job(s, job_id)
            if job is None:
                return None, [], []
            return job, q_metrics(s, job_id) or [], q_job_versions(s, job_id)
        job, rows, versions = await asyncio.to_thread(in_session, load)
        root = root_of(request)
        if job is None:
            return HTMLResponse(_page("not found", f"<p>No job {job_id}.</p>", root),
                                status_code=404)
        health = await asyncio.to_thread(stored_json, report_key(job_id, "health.json"))
        return HTMLResponse(_job_page(job, rows, versions, root, health))

    @app.get("/ui/jobs/{job_id}/curves.png", include_in_schema=False,
             dependencies=[read_page])
    async def job_page_curves(job_id: JobId) -> Response:
        return await curves(job_id)

    @app.get("/ui/models/{name}/versions/{version}/confusion_matrix.png",
             include_in_schema=False, dependencies=[read_page])
    async def job_page_confusion(name: ModelName, version: VersionNo) -> Response:
        return await confusion(name, version)

    return app


# -------------------------------------------------------------------- Ray Serve
def api_deployment(settings: Settings, *, num_cpus: float = 0.0, num_replicas: int = 1,
                   cancel_wait_s: float = CANCEL_WAIT_S) -> Any:
    """The app as a Serve deployment: ``@serve.deployment @serve.ingress(app)``.

    ``num_cpus`` defaults to 0: the API waits on I/O, and on a small cluster a reserved
    CPU would keep a training worker from starting."""
    from ray import serve

    app = create_app(settings, cancel_wait_s=cancel_wait_s)

    @serve.deployment(name=DEPLOYMENT_NAME, num_replicas=num_replicas,
                      ray_actor_options={"num_cpus": num_cpus})
    @serve.ingress(app)
    class ColecionadorApi:
        """colecionador's HTTP API (services.api.create_app)."""

    return ColecionadorApi


def api_application(settings: Settings, **kw: Any) -> Any:
    """The bound application, for ``serve.run(api_application(settings), name=...)``."""
    return api_deployment(settings, **kw).bind()
