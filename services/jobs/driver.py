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

import argparse
import json
import logging
import sys
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import prepare_database, session_factory
from services.errors import StepFailed, one_line
from services.events import mlflow_outbox, mlflow_pump, outbox
from services.intake.admission import Rejection, admit
from services.intake.records import create_job
from services.intake.trust import check_plugins, judged_by
from services.jobs import lifecycle, steps
from services.jobs.card import write_model_card
from services.jobs.ray_jobs import current_submission_id
from services.registry import promotion
from services.store.artifacts import (
    MODEL_CARD_FILE,
    MODEL_FILE,
    TO_LABEL_CSV,
    event_key,
    version_prefix,
)
from services.store.storage import Store, open_store
from training.hyperparams import Hyperparameters, load_hyperparameters

log = logging.getLogger("colecionador.jobs")
Say = Callable[[str], None]


@dataclass
class JobOutcome:
    job_id: int
    status: str  # success | failed | cancelled
    verdict: str | None = None  # approved | rejected
    version: int | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    training_time_s: float | None = None
    summary: str | None = None  # a predict job's one line (rows, model, version)
    notes: list[str] = field(default_factory=list)  # ... and what to label next

    def lines(self) -> list[str]:
        """What a person reads: the verdict rule by rule, the metrics, the artifacts."""
        if self.status != "success":
            return [f"job {self.job_id} {self.status.upper()}: {self.error}"]
        if self.summary is not None:
            artifacts = (f"  {n:<21} {u}" for n, u in self.artifacts.items())
            return [self.summary, *self.notes, *artifacts]
        m = self.metrics or {}
        out = [f"job {self.job_id}: gate {(self.verdict or '').upper()} -> version {self.version}"]
        for rule in (self.gate or {}).get("rules", []):
            mark = "pass" if rule["passed"] else "FAIL"
            out.append(
                f"  {rule['metric']:<9} {rule['value']:.4f} {rule.get('op', '>')} "
                f"{rule['threshold']:.2f}  {mark}"
            )
        out.append(
            f"  f1 {m.get('f1', 0):.4f}  roc_auc {m.get('roc_auc') or float('nan'):.4f}"
            f"  test images {m.get('n')}  training {self.training_time_s or 0:.0f} s"
        )
        if m.get("temperature") is not None:
            out.append(
                f"  ECE {m['ece_uncalibrated']:.4f} -> {m['ece']:.4f} after temperature "
                f"scaling (T = {m['temperature']:.3g}, in model.pt)"
            )
        out += [f"  {name:<21} {uri}" for name, uri in self.artifacts.items()]
        return out


def _archive_event(settings: Settings, store: Store | None, body: dict[str, Any]) -> None:
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


def _commit_version(
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
    m = ev.metrics
    for _attempt in range(5):
        with session_factory(settings.db_url)() as s:
            mv = repo.reserve_version(
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
            if mv is None:
                continue  # another job took that number: the next one
            prefix = version_prefix(job.model_name, mv.version)
            try:
                uris = {name: store.put_bytes(prefix + name, data) for name, data in files.items()}
                missing = [n for n in files if not store.exists(prefix + n)]
                if missing:
                    raise RuntimeError(f"not in the store after upload: {', '.join(missing)}")
                finished = repo.finish_job(
                    s,
                    job.id,
                    "success",
                    commit=False,
                    accuracy=m["accuracy"],
                    training_time_s=training_time_s,
                    error=None,
                )
                if not finished:  # cancelled while it evaluated: keep nothing
                    s.rollback()
                    store.delete_prefix(prefix)
                    return None
                body = outbox.stage(
                    s,
                    settings,
                    outbox.job_event(
                        job,
                        ev.gate.status,
                        version=mv.version,
                        metrics=m,
                        gate=ev.gate.to_dict(),
                        artifact_uri=uris[MODEL_FILE],
                    ),
                )
                if mlflow_outbox.enabled(settings):  # artifacts, registration, the run's end
                    keys = {name: prefix + name for name in files}
                    args = (mv.version, ev.gate.status, uris[MODEL_FILE], keys, m)
                    mlflow_outbox.stage_success(s, job, *args)
                if ev.gate.approved:  # production moves with the version, same transaction
                    promotion.auto_promote(s, settings, job.model_name, mv.version, job.id)
                uris[MODEL_CARD_FILE] = write_model_card(s, store, mv, files)
                s.commit()
            except Exception as e:
                s.rollback()
                store.delete_prefix(prefix)
                raise StepFailed("store", one_line(e)) from e
            return mv.version, uris, body
    raise StepFailed("store", f"could not reserve a version of {job.model_name}")


def _searched_values(job: TrainingJob) -> dict[str, list[Any]] | None:
    """Every value a tune job's search may try, by name (its plugins are checked too)."""
    if job.mode != "tune":
        return None
    from tuning.spec import TuningSpec

    return TuningSpec.model_validate((job.request or {}).get("tuning") or {}).discrete_values()


def _run_steps(
    job: TrainingJob,
    hp: Hyperparameters,
    settings: Settings,
    store: Store,
    resume: bool,
    say: Callable[[str], None],
) -> JobOutcome:
    """Every step of a started job: its success, or the outcome the row already has when
    it was cancelled meanwhile. A failing step raises StepFailed."""
    if job.mode == "predict":
        return _predict(job, settings, store, say)
    try:  # the row may predate the operator's current allowlist: checked again here
        check_plugins(hp, settings, _searched_values(job))
    except ValueError as e:
        raise StepFailed("plugins", one_line(e)) from None
    data = steps.prepare_data(job, hp, settings, store, say)
    try:
        from training.callbacks import build_callbacks

        build_callbacks(hp.callbacks)  # a bad name fails here, not on every worker
    except (ValueError, TypeError) as e:
        raise StepFailed("callbacks", one_line(e)) from None
    backbone_state = steps.load_weights(hp, len(data.decoded.classes), settings)
    steps.on_the_cluster(job, settings)  # once, before the search, preflight or training
    tuning: dict[str, Any] | None = None
    oof = None  # a tune job's out-of-fold probabilities: its calibration, its label check
    if job.mode == "tune":
        from services.jobs.tune_step import tune_step

        hp, tuning, oof = tune_step(
            job, hp, data.decoded, data.split, backbone_state, store, settings, say, data.shards
        )
    train_data = data.train_data()
    pre = steps.run_preflight(job, hp, train_data, backbone_state, store, settings, say)
    hp = pre.hp
    trained = steps.train(
        job,
        hp,
        train_data,
        backbone_state,
        store,
        settings,
        resume,
        data.train_datasets(hp, job.num_workers or settings.workers),
    )
    with session_factory(settings.db_url)() as s:
        if not repo.mark_evaluating(s, job.id, trained.training_time_s):
            return _outcome_from_db(settings, job.id)  # cancelled while it trained
        history = repo.epoch_rows(s, job.id)
    evaluation = steps.evaluate(trained, data, judged_by(hp, settings), oof)
    labels = steps.check_labels(job, trained, data, hp, backbone_state, store, say, oof)
    files = steps.version_files(
        job, hp, data, trained, evaluation, history, pre.report, tuning, labels
    )
    stored = _commit_version(
        settings, store, job, files, evaluation, trained.training_time_s, data.fingerprint
    )
    if stored is None:
        return _outcome_from_db(settings, job.id)
    version, uris, event = stored
    return JobOutcome(
        job.id,
        "success",
        evaluation.gate.status,
        version,
        None,
        evaluation.metrics,
        evaluation.gate.to_dict(),
        uris,
        event,
        training_time_s=trained.training_time_s,
    )


def _predict(
    job: TrainingJob, settings: Settings, store: Store, say: Callable[[str], None]
) -> JobOutcome:
    """A predict job's steps (services/jobs/predict_step.py) and its outcome."""
    from services.jobs.predict_step import predict

    made = predict(job, settings, store, say)
    if made.event is None:
        return _outcome_from_db(settings, job.id)  # cancelled while it predicted
    return JobOutcome(
        job.id,
        "success",
        version=made.version,
        artifacts=made.uris,
        event=made.event,
        metrics={"rows": made.rows, "bad_rows": made.bad_rows},
        summary=f"job {job.id}: {made.rows} predictions ({made.bad_rows} unreadable) by "
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
        resume = job.status in ("training", "evaluating")
        hp = Hyperparameters(**repo.hyperparameters(s, job_id))
        if not repo.start_job(s, job_id, current_submission_id()):  # final, or cancelled
            return _outcome_from_db(settings, job_id)
    with mlflow_pump.tracking(settings, job):  # MLflow, when on: off the training path
        return _run_started(job, hp, settings, resume, say)


def _run_started(
    job: TrainingJob, hp: Hyperparameters, settings: Settings, resume: bool, say: Say
) -> JobOutcome:
    """A started job's steps to its final status, and its event said once."""
    store: Store | None = None
    try:
        try:
            store = open_store(settings)
        except Exception as e:  # noqa: BLE001 - any store error fails the job, recorded
            raise StepFailed("store", one_line(e)) from e
        outcome = _run_steps(job, hp, settings, store, resume, say)
    except KeyboardInterrupt:
        raise  # stopped by its user or Ray: the cancel (or the reconciler) says how it ended
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then reported
        # (SystemExit too: a plugin that exits must not leave the row ``training``)
        reason = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {one_line(e)}"
        if not isinstance(e, StepFailed):
            traceback.print_exc()
        outcome = _fail(settings, job, reason)
    if outcome.event is not None:  # this run decided the final status: say it
        _archive_event(settings, store, outcome.event)
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
    return JobOutcome(job_id, "failed", error=reason)


def _fail(settings: Settings, job: TrainingJob, reason: str) -> JobOutcome:
    """``failed`` with its event, in one transaction, unless the job was cancelled
    meanwhile (then the cancel's outcome stands)."""
    body = lifecycle.fail(settings, job.id, reason)
    if body is None:
        return _outcome_from_db(settings, job.id)
    return JobOutcome(job.id, "failed", error=reason, event=body)


def _outcome_from_db(settings: Settings, job_id: int) -> JobOutcome:
    """The outcome a finished (or cancelled) job already has."""
    with session_factory(settings.db_url)() as s:
        job = repo.get_job(s, job_id)
        assert job is not None  # a job that has an outcome has its row
        mv = next(iter(repo.job_versions(s, job_id)), None)
    if mv is None:
        return JobOutcome(job.id, job.status, error=job.error)
    return JobOutcome(
        job.id,
        job.status,
        mv.status,
        mv.version,
        job.error,
        {"accuracy": mv.accuracy, "precision": mv.precision, "recall": mv.recall, "f1": mv.f1},
        mv.gate,
        {MODEL_FILE: mv.model_path},
        training_time_s=job.training_time_s,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m services.jobs --job-id N`` or ``--dataset URI [--batch-id ID]``."""
    p = argparse.ArgumentParser(prog="python -m services.jobs", description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--job-id", type=int)
    g.add_argument("--dataset")
    p.add_argument("--batch-id")
    p.add_argument("--model-name", default="classifier")
    p.add_argument("--config", help="hyperparameters file (with --dataset)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --dataset")
    p.add_argument("--workers", type=int)
    p.add_argument("--model", help="with --dataset: predict with NAME[@alias|@vN] (mode predict)")
    p.add_argument("--out", help="with --model: a copy of the predictions goes here")
    p.add_argument("--label-next", type=int, help="with --model: rank N images to label next")
    args = p.parse_args(argv)
    settings = Settings()
    job_id = args.job_id
    if job_id is None:
        try:
            hp = load_hyperparameters(args.config, args.set or [])
        except ValueError as e:
            p.error(str(e))
        body: dict[str, Any] = {
            "batch_id": args.batch_id or f"job-{uuid.uuid4().hex[:12]}",
            "dataset_uri": args.dataset,
            "model_name": args.model_name,
            "hyperparameters": hp,
        }
        if any(v is not None for v in (args.model, args.out, args.label_next)):  # admit checks
            body.update(
                mode="predict", model=args.model, out_uri=args.out, label_next=args.label_next
            )
            del body["model_name"]
        request = admit(body, settings)  # a Ray job is a request like any other
        if isinstance(request, Rejection):
            p.error(request.reason)
        job, created = create_job(settings, request, num_workers=args.workers)
        job_id = job.id
        submission_id = current_submission_id()
        if created and submission_id:
            with session_factory(settings.db_url)() as s:
                repo.set_ray_job_id(s, job_id, submission_id)
    outcome = run_job(job_id, settings)
    print(
        json.dumps(
            {
                "job_id": outcome.job_id,
                "status": outcome.status,
                "verdict": outcome.verdict,
                "version": outcome.version,
                "error": outcome.error,
            }
        )
    )
    return 0 if outcome.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
