"""A successful job's commit: the version reserved, its files uploaded, then its row, the job's
success, its event and the production alias in one transaction; the event archived in the
store."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.db.models import ModelVersion, TrainingJob
from services.db.session import session_factory
from services.errors import StepFailed, one_line
from services.events import mlflow_outbox, outbox
from services.jobs import steps
from services.jobs.card import write_model_card
from services.registry import promotion
from services.statuses import JobStatus
from services.store.artifacts import (
    MODEL_CARD_FILE,
    MODEL_FILE,
    event_key,
    version_prefix,
)
from services.store.storage import Store

log = logging.getLogger("colecionador.jobs")


def archive_event(settings: Settings, store: Store | None, body: dict[str, Any]) -> None:
    """Publish the job's event now if the broker answers (else the ingress publishes it
    from the outbox) and keep a copy in the store (events/job-<id>.json)."""
    published = outbox.try_publish(settings, body["job_id"])
    if store is None:
        return
    try:
        store.put_bytes(
            event_key(body["job_id"]),
            json.dumps({"event": body, "published": published}, indent=2).encode(),
        )
    except Exception as e:  # noqa: BLE001 - the outbox row is the record
        log.warning("event of job %s not archived: %s", body["job_id"], one_line(e))


def commit_version(
    settings: Settings,
    store: Store,
    job: TrainingJob,
    files: dict[str, bytes],
    ev: steps.Evaluation,
    training_time_s: float,
    fingerprint: str | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]] | None:
    """Reserve the next version, upload every file, then commit the row together with the
    job's ``success``, its event and (approved, unless the model promotes manually) the
    ``production`` alias with its ModelPromoted event: no row ever points at an object
    that is not there, two jobs never write the same v<N>/ folder, and a job cancelled
    meanwhile keeps no version (None). model_card.md is rendered last, from the row, the
    files and the promotion as the transaction has them (services/jobs/card.py).
    Returns the version, the files' URIs and the event."""
    for _attempt in range(5):
        with session_factory(settings.db_url)() as s:
            mv = _reserve(s, store, job, ev, fingerprint)
            if mv is None:
                continue  # another job took that number: the next one
            prefix = version_prefix(job.model_name, mv.version)
            try:
                committed = _upload_and_commit(
                    s, settings, store, job, mv, files, ev, training_time_s
                )
            except Exception as e:
                s.rollback()
                store.delete_prefix(prefix)
                raise StepFailed("store", one_line(e)) from e
            if committed is None:  # cancelled while it evaluated: keep nothing
                s.rollback()
                store.delete_prefix(prefix)
                return None
            return (mv.version, *committed)
    raise StepFailed("store", f"could not reserve a version of {job.model_name}")


def _reserve(
    s: Session, store: Store, job: TrainingJob, ev: steps.Evaluation, fingerprint: str | None
) -> ModelVersion | None:
    """The next version's row, uncommitted (None: another job took that number)."""
    m = ev.metrics
    return repo.reserve_version(
        s,
        job.model_name,
        job_id=job.id,
        accuracy=m["accuracy"],
        precision=m["precision"],
        recall=m["recall"],
        f1=m["f1"],
        roc_auc=m.get("roc_auc"),
        status=ev.gate.status,
        gate=ev.gate.to_dict(),
        dataset_fingerprint=fingerprint,
        model_path=lambda v: store.uri(version_prefix(job.model_name, v) + MODEL_FILE),
    )


def _upload_and_commit(
    s: Session,
    settings: Settings,
    store: Store,
    job: TrainingJob,
    mv: ModelVersion,
    files: dict[str, bytes],
    ev: steps.Evaluation,
    training_time_s: float,
) -> tuple[dict[str, str], dict[str, Any]] | None:
    """Upload the files, then commit the job's success with its event, MLflow records,
    the production alias and the model card: the files' URIs and the event, or None
    (nothing committed) when the job was cancelled meanwhile."""
    m, prefix = ev.metrics, version_prefix(job.model_name, mv.version)
    uris = {name: store.put_bytes(prefix + name, data) for name, data in files.items()}
    missing = [n for n in files if not store.exists(prefix + n)]
    if missing:
        raise RuntimeError(f"not in the store after upload: {', '.join(missing)}")
    finished = repo.finish_job(
        s,
        job.id,
        JobStatus.SUCCESS,
        commit=False,
        accuracy=m["accuracy"],
        training_time_s=training_time_s,
        error=None,
    )
    if not finished:
        return None
    event = outbox.job_event(
        job,
        ev.gate.status,
        version=mv.version,
        metrics=m,
        gate=ev.gate.to_dict(),
        artifact_uri=uris[MODEL_FILE],
    )
    body = outbox.stage(s, settings, event)
    if mlflow_outbox.enabled(settings):  # artifacts, registration, the run's end
        keys = {name: prefix + name for name in files}
        mlflow_outbox.stage_success(s, job, mv.version, ev.gate.status, uris[MODEL_FILE], keys, m)
    if ev.gate.approved:  # production moves with the version, same transaction
        promotion.auto_promote(s, settings, job.model_name, mv.version, job.id)
    uris[MODEL_CARD_FILE] = write_model_card(s, store, mv, files)
    s.commit()
    return uris, body
