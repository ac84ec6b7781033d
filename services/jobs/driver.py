"""The job driver: take a queued job through its steps (services/jobs/steps/) to one final
status, and say so once.

    record (services/intake/records.py) -> prepare data -> [tune] -> [preflight] -> train
        -> evaluate + gate -> version (row + files) -> final status -> event

``run_job`` never raises for a failing step: the job ends ``failed`` with a one-line
reason naming the step. The final status is decided once, by a conditional update, in
the same transaction as the job's event (services/events/outbox.py) and, on success, its
version: a job cancelled meanwhile stays cancelled and keeps no version (the cancel wrote
its event). The event always matches the row.

Run as a Ray job with ``python -m services.jobs --job-id N`` (or ``--dataset URI`` to
record and run a new one; ``--dataset URI --model NAME[@alias|@vN] [--out URI]`` for bulk
predictions).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import prepare_database, session_factory
from services.errors import StepFailed, one_line
from services.events import mlflow_pump
from services.intake.spec import JobSpec
from services.intake.trust import check_plugins, judged_by
from services.jobs import lifecycle, steps
from services.jobs.commit import archive_event, commit_version
from services.jobs.outcome import JobOutcome, outcome_from_db
from services.jobs.ray_jobs import current_submission_id
from services.jobs.steps.context import StepContext
from services.statuses import JobStatus
from services.store.artifacts import (
    TO_LABEL_CSV,
)
from services.store.storage import Store, open_store

log = logging.getLogger("colecionador.jobs")


Say = Callable[[str], None]


def _run_steps(job: TrainingJob, spec: JobSpec, ctx: StepContext) -> JobOutcome:
    """Every step of a started job: its success, or the outcome the row already has when
    it was cancelled meanwhile. A failing step raises StepFailed. The steps take the spec
    and the context; the row (as read when the job started) names the job in its event."""
    if spec.mode == "predict":
        return _predict(spec, ctx)
    settings = ctx.settings
    _check_plugins(spec, settings)
    data = steps.prepare_data(spec, ctx)
    hp = spec.hyperparameters
    backbone_state = steps.load_weights(hp, len(data.decoded.classes), settings)
    spec = steps.on_the_cluster(spec, ctx)  # once, before the search, preflight or training
    spec, tuning, oof = _search(spec, ctx, data, backbone_state)
    train_data = data.train_data()
    pre = steps.run_preflight(spec, ctx, train_data, backbone_state)
    spec = spec.model_copy(update={"hyperparameters": pre.hp})
    datasets = data.train_datasets(pre.hp, spec.workers(settings.workers))
    trained = steps.train(spec, ctx, train_data, backbone_state, datasets)
    with ctx.sessions() as s:
        if not repo.mark_evaluating(s, ctx.job_id, trained.training_time_s):
            return outcome_from_db(settings, ctx.job_id)  # cancelled while it trained
        history = repo.epoch_rows(s, ctx.job_id)
    evaluation = steps.evaluate(trained, data, judged_by(pre.hp, settings), oof)
    labels = steps.check_labels(spec, ctx, trained, data, backbone_state, oof)
    results = steps.JobResults(trained, evaluation, history, pre.report, tuning, labels)
    files = steps.version_files(spec, ctx.job_id, data, results)
    return _commit(job, ctx, files, evaluation, trained, data.fingerprint)


def _commit(
    job: TrainingJob,
    ctx: StepContext,
    files: dict[str, bytes],
    evaluation: steps.Evaluation,
    trained: steps.TrainedModel,
    fingerprint: str | None,
) -> JobOutcome:
    """The version committed with the job's success (services/jobs/commit.py), or the
    outcome the row already has when it was cancelled meanwhile."""
    settings = ctx.settings
    stored = commit_version(
        settings, ctx.store, job, files, evaluation, trained.training_time_s, fingerprint
    )
    if stored is None:
        return outcome_from_db(settings, ctx.job_id)
    version, uris, event = stored
    return JobOutcome(
        ctx.job_id,
        JobStatus.SUCCESS,
        evaluation.gate.status,
        version,
        None,
        evaluation.metrics,
        evaluation.gate.to_dict(),
        uris,
        event,
        training_time_s=trained.training_time_s,
    )


def _search(
    spec: JobSpec, ctx: StepContext, data: steps.PreparedData, backbone_state: Any
) -> tuple[JobSpec, dict[str, Any] | None, Any]:
    """A tune job's search (services/jobs/tune_step.py): the spec with the winner's
    hyperparameters, the search's record (tuning.json) and its out-of-fold probabilities
    (for its calibration and label check). A train job's are its own, None and None."""
    if spec.tuning is None:
        return spec, None, None
    from services.jobs.tune_step import tune_step

    hp, summary, oof = tune_step(spec, ctx, data.decoded, data.split, backbone_state, data.shards)
    return spec.model_copy(update={"hyperparameters": hp}), summary, oof


def _check_plugins(spec: JobSpec, settings: Settings) -> None:
    """The request's plugins against the operator's current allowlist (the row may predate
    it) and its callbacks built once here, so a bad name fails the job, not every worker."""
    hp = spec.hyperparameters
    try:
        check_plugins(hp, settings, spec.searched_values())
    except ValueError as e:
        raise StepFailed("plugins", one_line(e)) from None
    try:
        from training.callbacks import build_callbacks

        build_callbacks(hp.callbacks)
    except (ValueError, TypeError) as e:
        raise StepFailed("callbacks", one_line(e)) from None


def _predict(spec: JobSpec, ctx: StepContext) -> JobOutcome:
    """A predict job's steps (services/jobs/predict_step.py) and its outcome."""
    from services.jobs.predict_step import predict

    made = predict(spec, ctx)
    if made.event is None:
        return outcome_from_db(ctx.settings, ctx.job_id)  # cancelled while it predicted
    return JobOutcome(
        ctx.job_id,
        JobStatus.SUCCESS,
        version=made.version,
        artifacts=made.uris,
        event=made.event,
        metrics={"rows": made.rows, "bad_rows": made.bad_rows},
        summary=f"job {ctx.job_id}: {made.rows} predictions ({made.bad_rows} unreadable) by "
        f"{made.model_name} v{made.version} in {made.seconds:.1f} s",
        notes=made.to_label.lines(made.uris.get(TO_LABEL_CSV)) if made.to_label else [],
    )


def run_job(
    job_id: int, settings: Settings, say: Callable[[str], None] = lambda m: print(m, flush=True)
) -> JobOutcome:
    """Take job ``job_id`` through every step; never raises for a failing step.

    A ``mode: tune`` job first runs the search (services/jobs/tune_step.py), records it,
    merges the best config into the job's hyperparameters, then goes through the same
    train -> evaluate -> gate -> store -> publish steps with them."""
    try:
        prepare_database(settings)
    except Exception as e:  # noqa: BLE001 - the job's failure, recorded where it can be
        return _unmigrated(settings, job_id, e)
    with session_factory(settings.db_url)() as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        resume = job.status in (JobStatus.TRAINING, JobStatus.EVALUATING)
        spec = JobSpec.from_job(job, repo.hyperparameters(s, job_id))  # validated once
        if not repo.start_job(s, job_id, current_submission_id()):  # final, or cancelled
            return outcome_from_db(settings, job_id)
    with mlflow_pump.tracking(settings, job):  # MLflow, when on: off the training path
        return _run_started(job, spec, settings, resume, say)


def _run_started(
    job: TrainingJob, spec: JobSpec, settings: Settings, resume: bool, say: Say
) -> JobOutcome:
    """A started job's steps to its final status, and its event said once."""
    store: Store | None = None
    try:
        try:
            store = open_store(settings)
        except Exception as e:  # noqa: BLE001 - any store error fails the job, recorded
            raise StepFailed("store", one_line(e)) from e
        sessions = session_factory(settings.db_url)
        ctx = StepContext(job.id, settings, store, sessions, say, resume)
        outcome = _run_steps(job, spec, ctx)
    except KeyboardInterrupt:
        raise  # stopped by its user or Ray: the cancel (or the reconciler) says how it ended
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then reported
        # (SystemExit too: a plugin that exits must not leave the row ``training``)
        reason = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {one_line(e)}"
        if not isinstance(e, StepFailed):
            traceback.print_exc()
        outcome = _fail(settings, job, reason)
    if outcome.event is not None:  # this run decided the final status: say it
        archive_event(settings, store, outcome.event)
    return outcome


def _unmigrated(settings: Settings, job_id: int, e: Exception) -> JobOutcome:
    """The schema could not be brought to this driver's head (a revision it does not know,
    a migration that failed): the job fails with that reason, recorded if its row can
    still be written, rather than a driver that exits with a traceback and a row that
    stays queued for the reconciler to resubmit again and again."""
    reason = f"database: the schema could not be migrated: {type(e).__name__}: {one_line(e)}"
    try:
        lifecycle.fail(settings, job_id, reason)
    except Exception as again:  # noqa: BLE001 - not even that: the driver's output says why
        log.error("job %s: %s (and it could not be recorded: %s)", job_id, reason, again)
    return JobOutcome(job_id, JobStatus.FAILED, error=reason)


def _fail(settings: Settings, job: TrainingJob, reason: str) -> JobOutcome:
    """``failed`` with its event, in one transaction, unless the job was cancelled
    meanwhile (then the cancel's outcome stands)."""
    body = lifecycle.fail(settings, job.id, reason)
    if body is None:
        return outcome_from_db(settings, job.id)
    return JobOutcome(job.id, JobStatus.FAILED, error=reason, event=body)
