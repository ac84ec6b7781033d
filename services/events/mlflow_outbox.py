"""MLflow tracking through an outbox, the pattern of services/events/outbox.py: with
``mlflow_tracking_uri`` set, every job is an MLflow run, and what it writes there is a row
of ``mlflow_outbox`` staged in the transaction of the row it mirrors:

    run      the run's tags (job id, batch id, attempt), at every attempt's start (driver)
    params   every effective hyperparameter, as the trainer gets them (driver)
    epoch    one epoch's metrics with its ``step`` (the Train controller's EpochRecorder)
    trials   a tune job's configs as nested runs, their fold means per epoch (tune step)
    version  the version's metrics.json, pictures and model card, its test metrics (commit)
    register an approved version in the model registry, our version number as a tag
    alias    an alias move mirrored on the registered version (services/registry/promotion.py)
    end      the run's end: FINISHED, FAILED or KILLED (the job's final status)

``drain`` sends the unsent rows in id order per model (services/events/mlflow_writer.py
does the MLflow calls), each leased while it is sent so two drainers (the job's driver
and the ingress) never send one model's rows out of order. A server that is away or slow
costs at most one client timeout (``mlflow_timeout_s``, no client retries): the drain
stops and the rows wait for the next one; a record MLflow refuses (4xx) is marked so,
with the reason, and never blocks the ones after it. The job's driver drains its own
model's rows in a background thread (services/events/mlflow_pump.py), off the training
path; the ingress drains everything left on every pass. No MLflow import here: staging
is a row.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.db.models import utcnow
from services.db.session import session_factory
from services.errors import one_line
from services.statuses import GateStatus, JobStatus
from services.store.artifacts import METRICS_FILE, MODEL_CARD_FILE

log = logging.getLogger("colecionador.mlflow")

MAX_ATTEMPTS = 20  # a record failing on our side (not the server's) this often is refused
ARTIFACTS = (METRICS_FILE, MODEL_CARD_FILE)  # and every .png of the version folder
RUN_STATUS: dict[str, str] = {
    JobStatus.SUCCESS: "FINISHED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "KILLED",
}


def enabled(settings: Settings) -> bool:
    return settings.mlflow_tracking_uri is not None


def tracks(s: Session, settings: Settings, **which: Any) -> bool:
    """Whether to stage a record about a job or model (``job_id=`` / ``model_name=``):
    MLflow is on here, or it was where the job ran (the API's cancel and promote end and
    move what a driver started, whatever this process's settings say)."""
    return enabled(settings) or repo.has_mlflow_records(s, **which)


def run_key(job_id: int) -> str:
    """The tag that finds a job's run again (``colecionador.run_key``)."""
    return f"job-{job_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


def metric_values(row: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The numbers of ``row`` as MLflow metrics: bools and non-numbers left out, NaN and
    inf kept as their names (JSON has no spelling for them; the writer reads them back)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[str(k)] = float(v) if math.isfinite(v) else str(float(v))
    return out


def param_values(values: dict[str, Any]) -> dict[str, str]:
    """Every value as MLflow keeps params: text (JSON for what is not a string)."""
    import json

    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in values.items()
    }


def _stage(
    s: Session, job_id: int | None, model_name: str, kind: str, body: dict[str, Any]
) -> None:
    repo.add_mlflow_record(s, job_id, model_name, kind, {"job_id": job_id, **body})


# ----------------------------------------------------------------- staging (no commit)
def stage_run(s: Session, job: Any, attempt: int) -> None:
    """The run of ``job`` and its tags (at each attempt's start: the attempt moves)."""
    _stage(
        s,
        job.id,
        job.model_name,
        "run",
        {
            "run_key": run_key(job.id),
            "tags": {
                "colecionador.job_id": str(job.id),
                "colecionador.batch_id": job.batch_id,
                "colecionador.attempt": str(attempt),
                "colecionador.mode": job.mode,
                "colecionador.dataset_uri": job.dataset_uri,
            },
        },
    )


def stage_params(s: Session, job_id: int, model_name: str, hyperparameters: dict[str, Any]) -> None:
    _stage(
        s,
        job_id,
        model_name,
        "params",
        {"run_key": run_key(job_id), "params": param_values(hyperparameters)},
    )


def stage_epoch(s: Session, job_id: int, model_name: str, row: dict[str, Any]) -> None:
    """One epoch report's numbers at ``step`` = its epoch (the timestamp fixed here, so a
    record sent twice is one point of MLflow's history)."""
    _stage(
        s,
        job_id,
        model_name,
        "epoch",
        {
            "run_key": run_key(job_id),
            "step": int(row["epoch"]),
            "at_ms": now_ms(),
            "metrics": metric_values(row, skip=("epoch", "final")),
        },
    )


def stage_trials(
    s: Session, job_id: int, model_name: str, tuning_run: int, trials: list[dict[str, Any]]
) -> None:
    """A search's configs as nested runs of the job's run. ``trials``: index, config,
    status, rank and history (per epoch: the mean and std over folds)."""
    out = []
    for t in trials:
        history = [
            {"step": int(h["epoch"]), "metrics": metric_values(h, skip=("epoch",))}
            for h in t.get("history") or []
        ]
        out.append(
            {
                "run_key": f"{run_key(job_id)}-trial-{t['index']}",
                "index": t["index"],
                "config": param_values(t.get("config") or {}),
                "status": t.get("status"),
                "rank": t.get("rank"),
                "history": history,
            }
        )
    _stage(
        s,
        job_id,
        model_name,
        "trials",
        {"run_key": run_key(job_id), "tuning_run": tuning_run, "at_ms": now_ms(), "trials": out},
    )


def registry_source(model_uri: str) -> str | None:
    """Where the registered version points: the version's folder in the store when MLflow
    can reach it (s3://...); None for a local folder (MLflow refuses local sources that
    are not a run's artifacts: the writer uses the run's artifacts then)."""
    if "://" not in model_uri or model_uri.startswith("file:"):
        return None
    return model_uri.rsplit("/", 1)[0]


def stage_success(
    s: Session,
    job: Any,
    version: int,
    status: str,
    model_uri: str,
    keys: dict[str, str],
    metrics: dict[str, Any],
) -> None:
    """A job that ends with a committed version: the version's artifacts (``keys``: name
    -> store key of the files MLflow gets: metrics.json, the pictures, model_card.md), its
    test metrics, its registration when approved, and the run's end (FINISHED)."""
    body = {"run_key": run_key(job.id), "version": version, "status": status}
    body["model_uri"], body["source"] = model_uri, registry_source(model_uri)
    artifacts = {n: k for n, k in keys.items() if n in ARTIFACTS or n.endswith(".png")}
    tests = {f"test_{k}": v for k, v in metric_values(metrics).items()}
    _stage(
        s,
        job.id,
        job.model_name,
        "version",
        {**body, "artifacts": artifacts, "metrics": tests, "at_ms": now_ms()},
    )
    if status == GateStatus.APPROVED:
        _stage(s, job.id, job.model_name, "register", body)
    stage_end(s, job.id, job.model_name, JobStatus.SUCCESS, None)


def stage_alias(s: Session, model_name: str, alias: str, mv: Any) -> None:
    """An alias move to version ``mv`` (a ModelVersion row), mirrored on the registered
    version (registered then if it is not: a person promoting a rejected one)."""
    job_id = mv.job_id
    body = {"run_key": run_key(job_id) if job_id is not None else None, "version": mv.version}
    body.update(alias=alias, status=mv.status, model_uri=mv.model_path)
    body["source"] = registry_source(mv.model_path)
    _stage(s, job_id, model_name, "alias", body)


def stage_end(s: Session, job_id: int, model_name: str, status: str, error: str | None) -> None:
    _stage(
        s,
        job_id,
        model_name,
        "end",
        {
            "run_key": run_key(job_id),
            "status": RUN_STATUS[status],
            "job_status": status,
            "error": error,
            "at_ms": now_ms(),
        },
    )


def record(settings: Settings, stage: Any, *args: Any) -> None:
    """``stage(s, *args)`` in a transaction of its own, when MLflow is on; a failure is
    logged, never raised (tracking never fails a job)."""
    if not enabled(settings):
        return
    try:
        with session_factory(settings.db_url)() as s:
            stage(s, *args)
            s.commit()
    except Exception as e:  # noqa: BLE001 - the job goes on without this record
        log.warning("MLflow record not staged: %s", one_line(e))


# ----------------------------------------------------------------- sending
@dataclass
class Drained:
    sent: int = 0
    refused: int = 0
    failed: str | None = None  # why the drain stopped early: the server away or slow


def drain(
    settings: Settings,
    *,
    model_name: str | None = None,
    deadline: float | None = None,
    limit: int = 200,
) -> Drained:
    """Send the unsent records (of one model, or all) in order, ``limit`` at a time, until
    none is left, the server fails (``failed``: the rest waits for the next drain), no
    record moves (the rest is another drainer's) or ``deadline`` (monotonic) passes."""
    out = Drained()
    while True:
        with session_factory(settings.db_url)() as s:
            rows = [
                (r.id, r.model_name, r.kind, r.body, r.attempts)
                for r in repo.pending_mlflow_records(s, limit=limit, model_name=model_name)
            ]
        before = out.sent + out.refused
        _drain_rows(settings, rows, out, deadline)
        moved = out.sent + out.refused > before
        past = deadline is not None and time.monotonic() > deadline
        if len(rows) < limit or out.failed or not moved or past:
            return out


def _drain_rows(
    settings: Settings, rows: list[tuple[Any, ...]], out: Drained, deadline: float | None
) -> None:
    """Send ``rows`` in order, each leased while it is sent; a model whose record is
    another drainer's, or failed on our side, waits for the next drain."""
    from services.events.mlflow_writer import Refused, Unreachable, writer_for

    sf, writer, blocked = session_factory(settings.db_url), writer_for(settings), set()
    lease = timedelta(seconds=max(60, 20 * settings.mlflow_timeout_s))
    for record_id, model, kind, body, attempts in rows:
        if model in blocked:
            continue
        if deadline is not None and time.monotonic() > deadline:
            return
        with sf() as s:
            if not repo.claim_mlflow_record(s, record_id, utcnow() + lease):
                blocked.add(model)  # another drainer is at this model: its order is theirs
                continue
        try:
            writer.write(kind, model, body)
        except Refused as e:
            _settle(sf, record_id, error=f"refused: {e}", refused=True)
            out.refused += 1
            log.warning("MLflow refused %s record %s: %s", kind, record_id, e)
            continue
        except Unreachable as e:
            _settle(sf, record_id, error=f"unreachable: {e}")
            out.failed = str(e)
            return
        except Exception as e:  # noqa: BLE001 - our side (the store, a bug): counted
            give_up = attempts + 1 >= MAX_ATTEMPTS
            _settle(sf, record_id, error=f"{type(e).__name__}: {one_line(e)}", refused=give_up)
            blocked.add(model)
            continue
        _settle(sf, record_id, sent=True)
        out.sent += 1


def _settle(sf: Any, record_id: int, **kw: Any) -> None:
    with sf() as s:
        repo.settle_mlflow_record(s, record_id, sent=kw.pop("sent", False), **kw)


def drain_quietly(settings: Settings, **kw: Any) -> Drained:
    """``drain`` that never raises (the database away too): what failed is ``failed``."""
    try:
        return drain(settings, **kw)
    except Exception as e:  # noqa: BLE001 - the next drain tries again
        log.warning("MLflow drain stopped: %s", one_line(e))
        return Drained(failed=f"{type(e).__name__}: {one_line(e)}")


def backlog(settings: Settings) -> int | None:
    """Records not yet written (None: the database did not answer)."""
    try:
        with session_factory(settings.db_url)() as s:
            pending: int = repo.mlflow_backlog(s)["pending"]
            return pending
    except Exception:  # noqa: BLE001 - said as unknown
        return None
