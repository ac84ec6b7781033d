"""Repository functions: every read and write of the tables goes through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    PROMOTION_MODES,
    TUNING_RUN_STATUSES,
    AliasMove,
    Event,
    Hyperparameter,
    JobAttempt,
    MlflowRecord,
    ModelAlias,
    ModelPromotion,
    ModelVersion,
    TrainingJob,
    TrainingMetric,
    TuningRun,
    TuningTrial,
    utcnow,
)

METRIC_FIELDS = (
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_time_s",
    "images_per_s",
    "data_wait",
)


def create_job(
    s: Session,
    *,
    batch_id: str,
    dataset_uri: str,
    model_name: str,
    mode: str = "train",
    total_images: int | None = None,
    hyperparameters: dict[str, Any],
    request: dict[str, Any] | None = None,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[TrainingJob, bool]:
    """Insert a queued job and its effective hyperparameters in one transaction.

    batch_id is unique: a known batch_id returns the existing job and ``created=False``,
    so a redelivered or duplicated request never starts a second job.
    """
    existing = get_job_by_batch(s, batch_id)
    if existing is not None:
        return existing, False
    job = TrainingJob(
        batch_id=batch_id,
        dataset_uri=dataset_uri,
        model_name=model_name,
        mode=mode,
        total_images=total_images,
        status="queued",
        request=request,
        num_workers=num_workers,
        use_gpu=use_gpu,
    )
    job.hyperparameters = [Hyperparameter(name=k, value=v) for k, v in hyperparameters.items()]
    s.add(job)
    try:
        s.commit()
    except IntegrityError:  # another process inserted the same batch_id just now
        s.rollback()
        existing = get_job_by_batch(s, batch_id)
        if existing is None:
            raise
        return existing, False
    return job, True


def get_job(s: Session, job_id: int) -> TrainingJob | None:
    return s.get(TrainingJob, job_id)


def get_job_by_batch(s: Session, batch_id: str) -> TrainingJob | None:
    return s.scalar(select(TrainingJob).where(TrainingJob.batch_id == batch_id))


def list_jobs(
    s: Session, status: str | None = None, limit: int = 50, offset: int = 0
) -> Sequence[TrainingJob]:
    q = select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit).offset(offset)
    if status:
        q = q.where(TrainingJob.status == status)
    return s.scalars(q).all()


RUNNABLE = ACTIVE_STATUSES


def _update_job_if(
    s: Session, job_id: int, conditions: list[Any], *, commit: bool = True, **values: Any
) -> bool:
    """One conditional UPDATE of a job (committed unless ``commit`` is False): it never
    overwrites a status another process has just set. True if the job matched
    ``conditions`` and was updated."""
    done = (
        cast(  # an UPDATE's result: a CursorResult, which has rowcount
            CursorResult[Any],
            s.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, *conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        == 1
    )
    if commit:
        s.commit()
    return done


def start_job(s: Session, job_id: int, ray_job_id: str | None = None) -> bool:
    """queued / training / evaluating -> training (started_at stamped once): a job
    cancelled in the meantime stays cancelled. True if started."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        status="training",
        started_at=func.coalesce(TrainingJob.started_at, utcnow()),
        ray_job_id=func.coalesce(TrainingJob.ray_job_id, ray_job_id),
    )


def mark_evaluating(s: Session, job_id: int, training_time_s: float) -> bool:
    """training -> evaluating, unless the job was cancelled meanwhile."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        status="evaluating",
        training_time_s=training_time_s,
    )


def finish_job(s: Session, job_id: int, status: str, *, commit: bool = True, **fields: Any) -> bool:
    """success / failed, stamping finished_at, unless the job was cancelled meanwhile.
    With ``commit=False`` the caller commits (the version row and the final status in one
    transaction)."""
    if status not in ("success", "failed"):
        raise ValueError(f"not a finishing status: {status!r}")
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.in_(RUNNABLE)],
        commit=commit,
        status=status,
        finished_at=utcnow(),
        **fields,
    )


def hyperparameters(s: Session, job_id: int) -> dict[str, Any]:
    rows = s.scalars(select(Hyperparameter).where(Hyperparameter.job_id == job_id)).all()
    return {r.name: r.value for r in rows}


def record_epoch(s: Session, job_id: int, epoch: int, values: dict[str, Any]) -> None:
    """Upsert the row of one epoch: (job_id, epoch) is unique, so a resumed run that
    reports an epoch again overwrites it instead of recording it twice."""
    row = {
        "job_id": job_id,
        "epoch": epoch,
        "recorded_at": utcnow(),
        **{k: values.get(k) for k in METRIC_FIELDS},
    }
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(TrainingMetric).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={k: stmt.excluded[k] for k in (*METRIC_FIELDS, "recorded_at")},
    )
    s.execute(stmt)
    s.commit()


def epoch_rows(s: Session, job_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(TrainingMetric).where(TrainingMetric.job_id == job_id).order_by(TrainingMetric.epoch)
    ).all()
    return [{"epoch": r.epoch, **{k: getattr(r, k) for k in METRIC_FIELDS}} for r in rows]


def next_version(s: Session, model_name: str) -> int:
    current = s.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    return (current or 0) + 1


def reserve_version(
    s: Session, model_name: str, *, model_path: Callable[[int], str] | str, **fields: Any
) -> ModelVersion | None:
    """Insert the next version of ``model_name`` without committing: the row reserves the
    number (PostgreSQL's unique index makes a concurrent job wait, then fail) until the
    caller commits or rolls back. ``model_path``: the artifact URI, or a function of the
    version number that gives it. None if another job took that number first."""
    version = next_version(s, model_name)
    mv = ModelVersion(
        model_name=model_name,
        version=version,
        **fields,
        model_path=model_path(version) if callable(model_path) else model_path,
    )
    s.add(mv)
    try:
        s.flush()
    except IntegrityError:
        s.rollback()
        return None
    return mv


def versions(s: Session, model_name: str) -> Sequence[ModelVersion]:
    return s.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_name == model_name)
        .order_by(ModelVersion.version)
    ).all()


def get_version(s: Session, model_name: str, version: int) -> ModelVersion | None:
    return s.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
    )


def latest_version(s: Session, model_name: str, status: str | None = None) -> ModelVersion | None:
    q = select(ModelVersion).where(ModelVersion.model_name == model_name)
    if status:
        q = q.where(ModelVersion.status == status)
    return s.scalar(q.order_by(ModelVersion.version.desc()).limit(1))


def job_versions(s: Session, job_id: int) -> Sequence[ModelVersion]:
    return s.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)).all()


def set_ray_job_id(s: Session, job_id: int, ray_job_id: str) -> None:
    """Record the Ray job that runs this job (only that column: the job may be running)."""
    job = s.get(TrainingJob, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    job.ray_job_id = ray_job_id
    s.commit()


def set_use_gpu(s: Session, job_id: int, use_gpu: bool) -> None:
    """Record whether the job trains on GPUs, once decided (only that column)."""
    s.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(use_gpu=use_gpu))
    s.commit()


# ------------------------------------------------------- attempts and the outbox (issue 13)
def active_jobs(s: Session) -> Sequence[TrainingJob]:
    """Every job that has not ended (queued, training, evaluating), oldest first."""
    return s.scalars(
        select(TrainingJob).where(TrainingJob.status.in_(ACTIVE_STATUSES)).order_by(TrainingJob.id)
    ).all()


def record_attempt(s: Session, job_id: int, ray_job_id: str) -> int:
    """A Ray job now runs job ``job_id``: the next attempt, its submission id on the row.
    Idempotent: the attempt that already has ``ray_job_id`` is not recorded twice.
    Returns the attempt's number."""
    last = _last_attempt(s, job_id)
    if last is not None and last.ray_job_id == ray_job_id:
        return last.attempt
    attempt = (last.attempt if last else 0) + 1
    try:
        s.add(JobAttempt(job_id=job_id, attempt=attempt, ray_job_id=ray_job_id))
        s.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(attempts=attempt, ray_job_id=ray_job_id)
            .execution_options(synchronize_session=False)
        )
        s.commit()
    except IntegrityError:  # a duplicate message's handler recorded the same attempt first
        s.rollback()
        last = _last_attempt(s, job_id)
        if last is None or last.ray_job_id != ray_job_id:
            raise
    return attempt


def _last_attempt(s: Session, job_id: int) -> JobAttempt | None:
    return s.scalar(
        select(JobAttempt)
        .where(JobAttempt.job_id == job_id)
        .order_by(JobAttempt.attempt.desc())
        .limit(1)
    )


def end_attempt(
    s: Session,
    job_id: int,
    ray_job_id: str,
    ray_status: str | None,
    message: str | None,
    *,
    commit: bool = True,
) -> None:
    """What Ray said when the attempt's Ray job ended (or vanished)."""
    s.execute(
        update(JobAttempt)
        .where(
            JobAttempt.job_id == job_id,
            JobAttempt.ray_job_id == ray_job_id,
            JobAttempt.ended_at.is_(None),
        )
        .values(ended_at=utcnow(), ray_status=ray_status, message=message)
        .execution_options(synchronize_session=False)
    )
    if commit:
        s.commit()


def count_attempts(s: Session, job_id: int, ray_status: str) -> int:
    """How many of the job's attempts ended with Ray status ``ray_status``."""
    n = s.scalar(
        select(func.count())
        .select_from(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.ray_status == ray_status)
    )
    return int(n or 0)


def job_attempts(s: Session, job_id: int) -> Sequence[JobAttempt]:
    return s.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
    ).all()


def add_event(
    s: Session,
    event_id: str,
    job_id: int | None,
    kind: str,
    queue: str | None,
    body: dict[str, Any],
) -> None:
    """Stage an event in the outbox; the caller commits it with the change it reports."""
    s.add(Event(id=event_id, job_id=job_id, kind=kind, queue=queue, body=json_safe(body)))


def pending_events(s: Session, limit: int = 100, job_id: int | None = None) -> Sequence[Event]:
    """Unpublished events that have a queue, oldest first."""
    q = (
        select(Event)
        .where(Event.published_at.is_(None), Event.queue.is_not(None))
        .order_by(Event.created_at, Event.id)
        .limit(limit)
    )
    if job_id is not None:
        q = q.where(Event.job_id == job_id)
    return s.scalars(q).all()


def count_pending_events(s: Session) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.published_at.is_(None), Event.queue.is_not(None))
        )
        or 0
    )


def claim_event(s: Session, event_id: str) -> bool:
    """Lock an unpublished event for this session's transaction (PostgreSQL: ``FOR
    UPDATE SKIP LOCKED``): False when it is published already or another publisher
    holds it. The lock ends with the transaction (``mark_published`` commits it; a
    publisher that dies rolls it back, and the event stays pending)."""
    q = (
        select(Event.id)
        .where(Event.id == event_id, Event.published_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return s.scalar(q) is not None


def mark_published(s: Session, event_id: str) -> None:
    s.execute(
        update(Event)
        .where(Event.id == event_id, Event.published_at.is_(None))
        .values(published_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    s.commit()


def job_events(s: Session, job_id: int) -> Sequence[Event]:
    return s.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.created_at)).all()


# ------------------------------------------------ HTTP API (services/api/) reads and cancel
def count_jobs(s: Session, status: str | None = None) -> int:
    q = select(func.count()).select_from(TrainingJob)
    if status:
        q = q.where(TrainingJob.status == status)
    return int(s.scalar(q) or 0)


def list_models(s: Session) -> list[dict[str, Any]]:
    """Every model name with its number of versions, its latest version (the row) and the
    number of its latest approved version (None if none was approved), by name."""
    counts = (
        select(
            ModelVersion.model_name,
            func.count().label("n"),
            func.max(ModelVersion.version).label("latest"),
        )
        .group_by(ModelVersion.model_name)
        .subquery()
    )
    approved = (
        select(ModelVersion.model_name, func.max(ModelVersion.version).label("v"))
        .where(ModelVersion.status == "approved")
        .group_by(ModelVersion.model_name)
        .subquery()
    )
    rows = s.execute(
        select(ModelVersion, counts.c.n, approved.c.v)
        .join(
            counts,
            (ModelVersion.model_name == counts.c.model_name)
            & (ModelVersion.version == counts.c.latest),
        )
        .outerjoin(approved, ModelVersion.model_name == approved.c.model_name)
        .order_by(ModelVersion.model_name)
    ).all()
    return [
        {"name": mv.model_name, "versions": n, "latest": mv, "latest_approved": v}
        for mv, n, v in rows
    ]


def cancel_job(
    s: Session,
    job_id: int,
    *,
    error: str | None = None,
    commit: bool = True,
) -> bool:
    """Mark a job ``cancelled`` unless it is already final (success, failed, cancelled).
    One conditional UPDATE, so it never overwrites a status another process has just
    set. True if this call cancelled it."""
    return _update_job_if(
        s,
        job_id,
        [TrainingJob.status.not_in(FINAL_STATUSES)],
        commit=commit,
        status="cancelled",
        finished_at=utcnow(),
        error=error,
    )


# ----------------------------------------------------------------- tuning (issue 5)
def json_safe(value: Any) -> Any:
    """NaN and inf become None: PostgreSQL's JSONB rejects them and JSON has no spelling
    for them (a diverged fold's loss is the usual source)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return json_safe(value.item())
    return value


def create_tuning_run(s: Session, job_id: int, **fields: Any) -> TuningRun:
    """Insert a ``running`` tuning run of a job (grid, base hyperparameters, settings)."""
    run = TuningRun(job_id=job_id, status="running", **{k: json_safe(v) for k, v in fields.items()})
    s.add(run)
    s.commit()
    return run


def record_trial(s: Session, run_id: int, *, trial_index: int, **fields: Any) -> TuningTrial:
    """Insert or update the row of one trial ((run_id, trial_index) is unique)."""
    row = s.scalar(
        select(TuningTrial).where(
            TuningTrial.run_id == run_id, TuningTrial.trial_index == trial_index
        )
    )
    if row is None:
        row = TuningTrial(run_id=run_id, trial_index=trial_index)
        s.add(row)
    for k, v in fields.items():
        setattr(row, k, json_safe(v))
    row.recorded_at = utcnow()
    s.commit()
    return row


def set_trial_ranks(s: Session, run_id: int, ranks: dict[int, int | None]) -> None:
    """``ranks``: trial_index -> rank (1 is best)."""
    for row in s.scalars(select(TuningTrial).where(TuningTrial.run_id == run_id)).all():
        row.rank = ranks.get(row.trial_index)
    s.commit()


def finish_tuning_run(
    s: Session,
    run_id: int,
    status: str,
    *,
    job_hyperparameters: dict[str, Any] | None = None,
    **fields: Any,
) -> TuningRun:
    """Close a run (``completed`` or ``failed``); with ``job_hyperparameters`` the job's
    effective hyperparameters are replaced in the same transaction, so a run is never
    completed without its winner merged into the job."""
    if status not in TUNING_RUN_STATUSES:
        raise ValueError(f"unknown tuning run status {status!r}")
    run = s.get(TuningRun, run_id)
    if run is None:
        raise LookupError(f"no tuning run {run_id}")
    run.status, run.finished_at = status, utcnow()
    for k, v in fields.items():
        setattr(run, k, json_safe(v))
    if job_hyperparameters is not None:
        _replace_hyperparameters(s, run.job_id, job_hyperparameters)
    s.commit()
    return run


def _replace_hyperparameters(s: Session, job_id: int, values: dict[str, Any]) -> None:
    rows = {
        r.name: r
        for r in s.scalars(select(Hyperparameter).where(Hyperparameter.job_id == job_id)).all()
    }
    for name, value in values.items():
        if name in rows:
            rows[name].value = json_safe(value)
        else:
            s.add(Hyperparameter(job_id=job_id, name=name, value=json_safe(value)))
    for name, row in rows.items():
        if name not in values:
            s.delete(row)


def set_hyperparameters(s: Session, job_id: int, values: dict[str, Any]) -> None:
    """Replace a job's effective hyperparameters (all of them) with ``values``."""
    _replace_hyperparameters(s, job_id, values)
    s.commit()


def tuning_runs(s: Session, job_id: int) -> Sequence[TuningRun]:
    return s.scalars(
        select(TuningRun).where(TuningRun.job_id == job_id).order_by(TuningRun.id)
    ).all()


def latest_tuning_run(s: Session, job_id: int) -> TuningRun | None:
    return s.scalar(
        select(TuningRun).where(TuningRun.job_id == job_id).order_by(TuningRun.id.desc()).limit(1)
    )


def tuning_trials(s: Session, run_id: int) -> Sequence[TuningTrial]:
    """The trials of a run, best first where ranked, then in the order Tune made them."""
    return s.scalars(
        select(TuningTrial)
        .where(TuningTrial.run_id == run_id)
        .order_by(TuningTrial.rank.is_(None), TuningTrial.rank, TuningTrial.trial_index)
    ).all()


# ------------------------------------------------------- aliases and promotion (issue 16)
def version_for_alias(s: Session, model_name: str, alias: str) -> int | None:
    """The version ``alias`` (e.g. ``production``) of ``model_name`` points at, or None."""
    return s.scalar(
        select(ModelAlias.version).where(
            ModelAlias.model_name == model_name, ModelAlias.alias == alias
        )
    )


def model_aliases(s: Session, model_name: str | None = None) -> Sequence[ModelAlias]:
    """The aliases of one model (or of every model), by model then alias."""
    q = select(ModelAlias).order_by(ModelAlias.model_name, ModelAlias.alias)
    if model_name is not None:
        q = q.where(ModelAlias.model_name == model_name)
    return s.scalars(q).all()


def alias_moves(s: Session, model_name: str | None = None, limit: int = 100) -> Sequence[AliasMove]:
    """The audit of alias moves, newest first (of one model, or of every model)."""
    q = select(AliasMove).order_by(AliasMove.id.desc()).limit(limit)
    if model_name is not None:
        q = q.where(AliasMove.model_name == model_name)
    return s.scalars(q).all()


def alias_moves_to(s: Session, model_name: str, version: int) -> Sequence[AliasMove]:
    """The moves that pointed an alias at this version, oldest first (its model card)."""
    return s.scalars(
        select(AliasMove)
        .where(AliasMove.model_name == model_name, AliasMove.to_version == version)
        .order_by(AliasMove.id)
    ).all()


def promotion_mode(s: Session, model_name: str) -> str:
    """``auto`` (the default) or ``manual``."""
    return (
        s.scalar(select(ModelPromotion.mode).where(ModelPromotion.model_name == model_name))
        or "auto"
    )


def set_promotion_mode(s: Session, model_name: str, mode: str) -> None:
    if mode not in PROMOTION_MODES:
        raise ValueError(f"promotion mode must be one of {', '.join(PROMOTION_MODES)}")
    _upsert(
        s,
        ModelPromotion,
        {"model_name": model_name, "mode": mode, "updated_at": utcnow()},
        ["model_name"],
        ["mode", "updated_at"],
    )
    s.commit()


def _upsert(
    s: Session,
    model: type,
    row: dict[str, Any],
    keys: list[str],
    changed: list[str],
    where: Any = None,
) -> int:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET changed [WHERE where]: one atomic
    statement on PostgreSQL and SQLite. Returns the rows written (0: ``where`` said no)."""
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(model).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={k: stmt.excluded[k] for k in changed},
        where=where(stmt.excluded) if where is not None else None,
    )
    return cast(CursorResult[Any], s.execute(stmt)).rowcount  # an INSERT's: it has rowcount


def move_alias(
    s: Session,
    model_name: str,
    alias: str,
    version: int,
    *,
    by: str,
    reason: str | None,
    overrode_gate: bool = False,
    event_id: str | None = None,
    only_forward: bool = False,
) -> AliasMove | None:
    """Point ``alias`` at ``version`` and record the move, without committing (the caller
    commits it with its event). None when nothing moved: the alias already points there,
    or (``only_forward``) at a newer version. One conditional upsert, so two movers at
    once never lose a move's audit row; on PostgreSQL movers of one alias take its
    advisory lock first, so the first move of an alias (no row to lock yet) is serialised
    too and the second mover's audit row says where the first one left it."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"colecionador alias {model_name} {alias}"},
        )
    current = s.scalar(
        select(ModelAlias.version)
        .where(ModelAlias.model_name == model_name, ModelAlias.alias == alias)
        .with_for_update()
    )

    def when(new: Any) -> Any:
        cond = ModelAlias.version != new.version
        return cond & (ModelAlias.version < new.version) if only_forward else cond

    now = utcnow()
    written = _upsert(
        s,
        ModelAlias,
        {
            "model_name": model_name,
            "alias": alias,
            "version": version,
            "moved_at": now,
            "moved_by": by,
        },
        ["model_name", "alias"],
        ["version", "moved_at", "moved_by"],
        where=when,
    )
    if written != 1:
        return None
    move = AliasMove(
        model_name=model_name,
        alias=alias,
        from_version=current,
        to_version=version,
        moved_by=by,
        reason=reason,
        overrode_gate=overrode_gate,
        event_id=event_id,
        moved_at=now,
    )
    s.add(move)
    s.flush()
    return move


# ------------------------------------------------------------- the MLflow outbox (issue 28)
def add_mlflow_record(
    s: Session, job_id: int | None, model_name: str, kind: str, body: dict[str, Any]
) -> None:
    """Stage one MLflow record; the caller commits it with the row it mirrors."""
    s.add(MlflowRecord(job_id=job_id, model_name=model_name, kind=kind, body=json_safe(body)))


def _unsent() -> Any:
    return (MlflowRecord.sent_at.is_(None)) & (MlflowRecord.refused.is_(False))


def pending_mlflow_records(
    s: Session, limit: int = 200, model_name: str | None = None
) -> Sequence[MlflowRecord]:
    """Records not yet written (nor refused), in the order they were staged."""
    q = select(MlflowRecord).where(_unsent()).order_by(MlflowRecord.id).limit(limit)
    if model_name is not None:
        q = q.where(MlflowRecord.model_name == model_name)
    return s.scalars(q).all()


def claim_mlflow_record(s: Session, record_id: int, until: Any) -> bool:
    """Lease an unsent record until ``until`` (one conditional UPDATE, committed): False
    when it is sent, refused, or another drainer's lease on it still runs."""
    now = utcnow()
    done = cast(  # an UPDATE's result: a CursorResult, which has rowcount
        CursorResult[Any],
        s.execute(
            update(MlflowRecord)
            .where(
                MlflowRecord.id == record_id,
                _unsent(),
                (MlflowRecord.lease_until.is_(None)) | (MlflowRecord.lease_until < now),
            )
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    s.commit()
    return bool(done == 1)


def settle_mlflow_record(
    s: Session, record_id: int, *, sent: bool, error: str | None = None, refused: bool = False
) -> None:
    """Mark a leased record sent, refused, or (neither) failed for now: its lease ends,
    the attempt is counted and its error kept."""
    values: dict[str, Any] = {"lease_until": None, "error": error, "refused": refused}
    if sent:
        values["sent_at"] = utcnow()
    s.execute(
        update(MlflowRecord)
        .where(MlflowRecord.id == record_id)
        .values(attempts=MlflowRecord.attempts + 1, **values)
        .execution_options(synchronize_session=False)
    )
    s.commit()


def has_mlflow_records(
    s: Session, *, job_id: int | None = None, model_name: str | None = None
) -> bool:
    """Whether a job (or a model) has ever had an MLflow record: it is tracked."""
    q = select(MlflowRecord.id).limit(1)
    if job_id is not None:
        q = q.where(MlflowRecord.job_id == job_id)
    if model_name is not None:
        q = q.where(MlflowRecord.model_name == model_name)
    return s.scalar(q) is not None


def mlflow_backlog(s: Session, job_id: int | None = None) -> dict[str, Any]:
    """``pending`` and ``refused`` records (of one job, or all) and the latest error."""
    where = [] if job_id is None else [MlflowRecord.job_id == job_id]
    pending = s.scalar(select(func.count()).select_from(MlflowRecord).where(_unsent(), *where))
    refused = s.scalar(
        select(func.count()).select_from(MlflowRecord).where(MlflowRecord.refused, *where)
    )
    total = s.scalar(select(func.count()).select_from(MlflowRecord).where(*where))
    error = s.scalar(
        select(MlflowRecord.error)
        .where(MlflowRecord.error.is_not(None), MlflowRecord.sent_at.is_(None), *where)
        .order_by(MlflowRecord.id.desc())
        .limit(1)
    )
    return {
        "records": int(total or 0),
        "pending": int(pending or 0),
        "refused": int(refused or 0),
        "error": error,
    }
