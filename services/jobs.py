"""One job end to end: record -> train -> evaluate -> gate -> store -> publish.

``create_job`` validates and records a request (status ``queued``); ``run_job`` takes a
queued job through every step and leaves it ``success`` or ``failed`` with a one-line
reason naming the step. Run as a Ray job with ``python -m services.jobs --job-id N`` (or
``--dataset URI`` to record and run a new one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from services.config import Settings
from services.db import repo
from services.db.models import FINAL_STATUSES, TrainingJob
from services.db.session import session_factory, upgrade
from services.messages import EventMetrics, ModelEvaluationEvent, TrainingRequest
from services.storage import Store, StoreError, fetch_dataset, fetch_file, open_store
from training import data as datasets
from training.callbacks import build_callbacks
from training.evaluate import GateResult, evaluate, quality_gate
from training.hyperparams import Hyperparameters
from training.loop import MODEL_FILE, TrainData
from training.model import build_model, load_backbone_weights, load_model, read_state_dict
from training.plots import confusion_matrix_png, curves_png

log = logging.getLogger("colecionador.jobs")


class StepFailed(Exception):
    """A step of the job failed; ``str()`` is the one-line reason stored on the job."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


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


def one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return first[:500]


def current_submission_id() -> str | None:
    """The Ray job submission id when this process is a Ray job's driver."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def prepare_database(settings: Settings) -> None:
    """Bring the schema to head once per process and database (Alembic's context is
    module-global, so concurrent upgrades in threads would trample each other)."""
    if not settings.auto_migrate or settings.db_url in _migrated:
        return
    with _migrate_lock:
        if settings.db_url not in _migrated:
            upgrade(settings.db_url)
            _migrated.add(settings.db_url)


def create_job(settings: Settings, request: TrainingRequest, *, num_workers: int | None = None,
               use_gpu: bool | None = None) -> tuple[TrainingJob, bool]:
    """Record a validated request as a queued job; a known batch_id returns that job."""
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        return repo.create_job(
            s, batch_id=request.batch_id, dataset_uri=request.dataset_uri,
            model_name=request.model_name, mode=request.mode,
            total_images=request.total_images,
            hyperparameters=request.hyperparameters.effective(), request=request.to_json(),
            num_workers=num_workers or settings.workers,
            use_gpu=settings.use_gpu if use_gpu is None else use_gpu)


def init_ray(settings: Settings) -> None:
    import ray
    if ray.is_initialized():
        return
    ray.init(address=settings.ray_address, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)


# ----------------------------------------------------------------- the steps
def _load_data(job: TrainingJob, hp: Hyperparameters, settings: Settings):
    try:
        folder = fetch_dataset(job.dataset_uri, settings)
    except (FileNotFoundError, ValueError) as e:
        raise StepFailed("dataset", one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - a store error of any kind
        raise StepFailed("dataset", one_line(e)) from e
    try:
        decoded = datasets.load(folder, hp.image_size, hp.on_bad_image, hp.min_per_class)
        split = datasets.split(decoded.labels, hp.val_frac, hp.test_frac, hp.val_max,
                               hp.test_max, hp.seed)
    except ValueError as e:
        raise StepFailed("dataset", one_line(e)) from None
    return decoded, split


def _load_weights(hp: Hyperparameters, n_classes: int,
                  settings: Settings) -> dict[str, torch.Tensor] | None:
    if not hp.weights:
        return None
    try:
        state = read_state_dict(fetch_file(hp.weights, settings))
        load_backbone_weights(build_model(hp.backbone, n_classes, hp.dropout), state)
    except (FileNotFoundError, ValueError, StoreError) as e:
        raise StepFailed("weights", one_line(e)) from None
    return state


def _train(job: TrainingJob, hp: Hyperparameters, train_data: TrainData,
           backbone_state: Any, store: Store, settings: Settings,
           resume: bool) -> tuple[dict[str, Any], dict[str, Any], float]:
    import ray

    from services.progress import EpochRecorder
    from training.trainer import build_trainer

    init_ray(settings)
    run_name = str(job.id)
    storage_path, filesystem = store.ray_storage("checkpoints")
    if not resume:  # a reused (storage_path, name) silently resumes an older run
        store.delete_prefix(f"checkpoints/{run_name}")
    config = {"hyperparameters": hp.effective(), "data": ray.put(train_data),
              "backbone_state": ray.put(backbone_state) if backbone_state is not None else None}
    trainer = build_trainer(
        config, num_workers=job.num_workers or settings.workers,
        use_gpu=bool(job.use_gpu), storage_path=storage_path, storage_filesystem=filesystem,
        name=run_name, max_failures=settings.max_failures,
        callbacks=[EpochRecorder(settings.db_url, job.id)])
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - TrainingFailedError wraps the worker's error
        cause = e.__cause__ or e
        raise StepFailed("training", one_line(cause)) from e
    elapsed = time.perf_counter() - t0
    if result.checkpoint is None:
        raise StepFailed("training", "the run reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        package = torch.load(Path(d) / MODEL_FILE, map_location="cpu", weights_only=True)
    summary = dict(result.metrics or {})
    if summary.get("failure"):
        raise StepFailed("training", summary["failure"])
    return package, summary, elapsed


def _store_version(settings: Settings, store: Store, job: TrainingJob,
                   files: dict[str, bytes], metrics: dict[str, Any],
                   gate: GateResult) -> tuple[int, dict[str, str]]:
    """Reserve the next version, upload every artifact, then commit the row.

    The row is inserted (and so the version reserved, PostgreSQL's unique index making a
    concurrent job wait) before the uploads and committed after them: no row ever points
    at an object that is not there, and two jobs never write the same v<N>/ folder.
    """
    from sqlalchemy.exc import IntegrityError

    from services.db.models import ModelVersion
    for _attempt in range(5):
        with session_factory(settings.db_url)() as s:
            version = repo.next_version(s, job.model_name)
            prefix = f"models/{job.model_name}/v{version}/"
            mv = ModelVersion(
                model_name=job.model_name, version=version, job_id=job.id,
                accuracy=metrics["accuracy"], precision=metrics["precision"],
                recall=metrics["recall"], f1=metrics["f1"], roc_auc=metrics.get("roc_auc"),
                status=gate.status, gate=gate.to_dict(), model_path=store.uri(prefix + MODEL_FILE))
            s.add(mv)
            try:
                s.flush()
            except IntegrityError:
                s.rollback()
                continue
            uris: dict[str, str] = {}
            try:
                for name, payload in files.items():
                    uris[name] = store.put_bytes(prefix + name, payload)
                missing = [n for n in files if not store.exists(prefix + n)]
                if missing:
                    raise RuntimeError(f"not in the store after upload: {', '.join(missing)}")
                s.commit()
            except Exception as e:
                s.rollback()
                store.delete_prefix(prefix)
                raise StepFailed("store", one_line(e)) from e
            return version, uris
    raise StepFailed("store", f"could not reserve a version of {job.model_name}")


def _publish(settings: Settings, store: Store | None,
             event: ModelEvaluationEvent) -> dict[str, Any]:
    """Keep the event in the store (events/job-<id>.json) and publish it on the queue."""
    body = json.loads(event.model_dump_json())
    published, reason = False, None
    if settings.publish_events:
        from services.broker import publish_json_sync
        try:
            publish_json_sync(settings.broker_url, settings.events_queue, body)
            published = True
        except Exception as e:  # noqa: BLE001 - the model is versioned either way
            reason = one_line(e)
            log.warning("event of job %s not published: %s", event.job_id, reason)
    if store is None:
        return body
    try:
        store.put_bytes(f"events/job-{event.job_id}.json", json.dumps(
            {"event": body, "published": published, "reason": reason}, indent=2).encode())
    except Exception as e:  # noqa: BLE001
        log.warning("event of job %s not stored: %s", event.job_id, one_line(e))
    return body


def _metrics_json(metrics: dict[str, Any], gate: GateResult, summary: dict[str, Any],
                  split: Any, bad: list, hp: Hyperparameters,
                  history: list[dict[str, Any]], training_time_s: float) -> bytes:
    return json.dumps({
        "test": metrics, "gate": gate.to_dict(), "training": summary,
        "training_time_s": training_time_s, "split": split.sizes(),
        "skipped_images": [{"path": p, "reason": r} for p, r in bad],
        "hyperparameters": hp.effective(), "history": history,
    }, indent=2).encode()


def _tune(job: TrainingJob, hp: Hyperparameters, decoded: Any, split: Any,
          backbone_state: Any, store: Store, settings: Settings,
          say: Callable[[str], None], options: dict[str, Any],
          ) -> tuple[Hyperparameters, dict[str, Any]]:
    """The search of a ``mode: tune`` job: Ray Tune over the request's grid with k-fold CV
    on train + val (the test split stays held out) and ASHA; every trial recorded as it
    ends; the best config merged into the job's hyperparameters (same transaction as the
    run's completion). Returns the merged hyperparameters and a summary for tuning.json.
    A job resumed after its search completed reuses that search."""
    from pydantic import ValidationError

    from services.messages import TuningSpec
    from tuning import report as tuning_report
    from tuning.search import SearchSettings, expand_grid, run_search, validate_grid

    sf = session_factory(settings.db_url)
    with sf() as s:
        previous = repo.latest_tuning_run(s, job.id)
        if previous is not None and previous.status == "completed":
            say(f"job {job.id}: search already done (run {previous.id}); best config "
                f"{tuning_report.config_text(previous.best_config or {})}")
            trials = [_trial_dict(t) for t in repo.tuning_trials(s, previous.id)]
            return hp, {"run_id": previous.id, "metric": previous.metric,
                        "best_config": previous.best_config, "trials": trials}
        if previous is not None and previous.status == "running":  # its driver died
            repo.finish_tuning_run(s, previous.id, "failed", error="interrupted")
    try:
        spec = TuningSpec.model_validate((job.request or {}).get("tuning") or {})
        grid = validate_grid(spec.grid, hp)
        search = SearchSettings(
            k_folds=spec.k_folds, num_samples=spec.num_samples,
            cpus_per_trial=1.0, gpus_per_trial=1.0 if job.use_gpu else 0.0,
            **{k: v for k, v in options.items() if v is not None})
        search.check()
    except (ValidationError, ValueError, TypeError) as e:
        raise StepFailed("tuning", one_line(e)) from None
    with sf() as s:
        run = repo.create_tuning_run(
            s, job.id, grid=grid, base_hyperparameters=hp.effective(), k_folds=search.k_folds,
            num_samples=search.num_samples, metric=search.metric, mode=search.mode,
            scheduler=search.scheduler,
            grace_period=search.grace_period if search.scheduler == "asha" else None,
            reduction_factor=search.reduction_factor if search.scheduler == "asha" else None,
            max_concurrent=search.max_concurrent, resources=search.resources())
    run_id = run.id
    search.storage_path, search.storage_filesystem = store.ray_storage("tuning")
    search.name = f"job-{job.id}-run-{run_id}"
    n_configs = len(expand_grid(grid)) if search.num_samples <= 1 else search.num_samples
    say(f"job {job.id}: tuning run {run_id}: {n_configs} config(s) x {search.k_folds} folds "
        f"of train + val ({len(split.train) + len(split.val)} images; the "
        f"{len(split.test)} test images held out), {search.scheduler.upper()} on "
        f"{search.metric}")

    def record(trial: Any) -> None:  # runs in this process as each trial ends
        c = tuning_report.summarize(trial, search.metric)
        say("  " + tuning_report.trial_line(c, search.metric, n_configs))
        try:
            with sf() as s:
                repo.record_trial(s, run_id, **_trial_fields(c, trial.history, trial.trial_id))
        except Exception as e:  # noqa: BLE001 - recorded again after the search
            log.warning("trial %s of run %s not recorded yet: %s", c.index, run_id, e)

    init_ray(settings)
    try:
        result = run_search(decoded.images, decoded.labels, decoded.classes, split, hp, grid,
                            search, backbone_state=backbone_state, listener=record)
    except Exception as e:  # noqa: BLE001 - Tune's own errors; a failed trial is no error
        with sf() as s:
            repo.finish_tuning_run(s, run_id, "failed", error=one_line(e))
        raise StepFailed("tuning", one_line(e)) from e
    ranked = tuning_report.rank(result.trials, search.metric)
    winner = tuning_report.best(ranked, search.metric)
    summary_fields = dict(max_t=result.max_t, folds=result.folds, epochs_run=result.epochs_run,
                          fold_epochs_run=result.fold_epochs_run, wall_s=result.wall_s)
    with sf() as s:
        by_index = {t.index: t for t in result.trials}
        for c in ranked:  # every trial again, in case a listener write failed
            t = by_index[c.index]
            repo.record_trial(s, run_id, **_trial_fields(c, t.history, t.trial_id))
        repo.set_trial_ranks(s, run_id, {c.index: c.rank for c in ranked})
        if winner is None:
            first = next((c.error for c in ranked if c.error), "no trial reported a result")
            reason = f"no config produced an estimate ({len(ranked)} trial(s)); {first}"
            repo.finish_tuning_run(s, run_id, "failed", error=reason, **summary_fields)
            raise StepFailed("tuning", reason)
        merged = Hyperparameters(**{**hp.effective(), **winner.config})
        repo.finish_tuning_run(s, run_id, "completed", best_trial_index=winner.index,
                               best_config=winner.config,
                               job_hyperparameters=merged.effective(), **summary_fields)
    say(tuning_report.table(ranked, search.metric))
    say(f"best config: {tuning_report.config_text(winner.config)} "
        f"({search.metric} {tuning_report.estimate_text(winner, search.metric)} over "
        f"{search.k_folds} folds); "
        f"{result.epochs_run} config-epochs ({result.fold_epochs_run} fold-epochs) in "
        f"{result.wall_s:.0f} s. "
        f"Training it on the train split, judging it on the test split.")
    return merged, {"run_id": run_id, "metric": search.metric, "mode": search.mode,
                    "scheduler": search.scheduler, "k_folds": search.k_folds, "grid": grid,
                    "best_config": winner.config, "max_t": result.max_t,
                    "epochs_run": result.epochs_run,
                    "trials": [c.to_dict() for c in ranked]}


def _trial_fields(c: Any, history: list[dict[str, Any]], trial_id: str) -> dict[str, Any]:
    """A tuning_trials row from a tuning.report.ConfigSummary and the trial's history."""
    last, best = c.last or {}, c.best or {}
    return dict(trial_index=c.index, trial_id=trial_id, config=c.config, status=c.status,
                stopped_at=c.stopped_at, max_epochs=c.max_epochs,
                mean_val_loss=last.get("val_loss"), std_val_loss=last.get("val_loss_std"),
                mean_val_accuracy=last.get("val_accuracy"),
                std_val_accuracy=last.get("val_accuracy_std"),
                best_epoch=best.get("epoch"), best_mean=best.get(c.metric),
                best_std=best.get(f"{c.metric}_std"), epochs=history, error=c.error)


def _trial_dict(t: Any) -> dict[str, Any]:
    return {k: getattr(t, k) for k in ("trial_index", "config", "status", "stopped_at",
                                       "max_epochs", "mean_val_loss", "std_val_loss",
                                       "mean_val_accuracy", "std_val_accuracy", "rank",
                                       "error")}


# --------------------------------------------------------------- the whole job
def run_job(job_id: int, settings: Settings,
            say: Callable[[str], None] = lambda m: print(m, flush=True),
            tune_options: dict[str, Any] | None = None) -> JobOutcome:
    """Take job ``job_id`` through every step; never raises for a failing step.

    A ``mode: tune`` job first runs the search (``_tune``), records it, merges the best
    config into the job's hyperparameters, then goes through the same train -> evaluate
    -> gate -> store -> publish steps with them. ``tune_options`` (the CLI's): metric,
    scheduler, grace_period, reduction_factor, max_concurrent."""
    prepare_database(settings)
    sf = session_factory(settings.db_url)
    with sf() as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        if job.status in FINAL_STATUSES:
            return _outcome_from_db(settings, job)
        resume = job.status in ("training", "evaluating")
        hp = Hyperparameters(**repo.hyperparameters(s, job_id))
        repo.set_status(s, job_id, "training",
                        ray_job_id=job.ray_job_id or current_submission_id())
    store: Store | None = None
    finished_at = datetime.now(timezone.utc)
    try:
        try:
            store = open_store(settings)
        except Exception as e:  # noqa: BLE001 - any store error fails the job, recorded
            raise StepFailed("store", one_line(e)) from e
        decoded, split = _load_data(job, hp, settings)
        if decoded.bad:
            say(f"skipped {len(decoded.bad)} unreadable image(s)")
        say(f"job {job_id}: {len(decoded)} images, {len(decoded.classes)} classes, "
            f"split {split.sizes()}")
        try:
            build_callbacks(hp.callbacks)  # a bad name fails here, not on every worker
        except (ValueError, TypeError) as e:
            raise StepFailed("callbacks", one_line(e)) from None
        backbone_state = _load_weights(hp, len(decoded.classes), settings)
        tuning: dict[str, Any] | None = None
        if job.mode == "tune":
            hp, tuning = _tune(job, hp, decoded, split, backbone_state, store, settings, say,
                               tune_options or {})
        train_data = TrainData(decoded.images, decoded.labels, split.train, split.val,
                               decoded.classes)
        package, summary, training_time = _train(job, hp, train_data, backbone_state,
                                                 store, settings, resume)
        with sf() as s:
            repo.set_status(s, job_id, "evaluating", training_time_s=training_time)
            history = repo.epoch_rows(s, job_id)
        model, _ = load_model(package)
        test_x, test_y = decoded.images[split.test], decoded.labels[split.test]
        try:
            metrics = evaluate(model, test_x, test_y, decoded.classes)
        except Exception as e:  # noqa: BLE001
            raise StepFailed("evaluation", one_line(e)) from e
        gate = quality_gate(metrics, hp)
        buf = _torch_bytes(package)
        files = {
            MODEL_FILE: buf,
            "metrics.json": _metrics_json(metrics, gate, summary, split, decoded.bad, hp,
                                          history, training_time),
            "curves.png": curves_png(history, f"job {job_id}: {job.model_name}"),
            "confusion_matrix.png": confusion_matrix_png(
                metrics["confusion_matrix"], decoded.classes, f"{job.model_name}: test split"),
        }
        if tuning is not None:
            files["tuning.json"] = json.dumps(tuning, indent=2).encode()
        version, uris = _store_version(settings, store, job, files, metrics, gate)
        finished_at = datetime.now(timezone.utc)
        with sf() as s:
            repo.set_status(s, job_id, "success", accuracy=metrics["accuracy"], error=None)
        event = ModelEvaluationEvent(
            job_id=job_id, batch_id=job.batch_id, model_name=job.model_name, version=version,
            status=gate.status, metrics=EventMetrics(**{k: metrics[k] for k in
                                                        ("accuracy", "precision", "recall", "f1")}),
            gate=gate.passed(), artifact_uri=uris[MODEL_FILE], finished_at=finished_at)
        body = _publish(settings, store, event)
        return JobOutcome(job_id, "success", gate.status, version, None, metrics,
                          gate.to_dict(), uris, body, training_time)
    except Exception as e:  # noqa: BLE001 - every failure is recorded, then reported
        reason = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {one_line(e)}"
        if not isinstance(e, StepFailed):
            traceback.print_exc()
        with sf() as s:
            repo.set_status(s, job_id, "failed", error=reason)
        event = ModelEvaluationEvent(job_id=job_id, batch_id=job.batch_id,
                                     model_name=job.model_name, status="failed",
                                     finished_at=datetime.now(timezone.utc), error=reason)
        body = _publish(settings, store, event)
        return JobOutcome(job_id, "failed", error=reason, event=body)


def _torch_bytes(obj: Any) -> bytes:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _outcome_from_db(settings: Settings, job: TrainingJob) -> JobOutcome:
    with session_factory(settings.db_url)() as s:
        mv = next(iter(repo.job_versions(s, job.id)), None)
    if mv is None:
        return JobOutcome(job.id, job.status, error=job.error)
    return JobOutcome(job.id, job.status, mv.status, mv.version, job.error,
                      {"accuracy": mv.accuracy, "precision": mv.precision,
                       "recall": mv.recall, "f1": mv.f1}, mv.gate, {MODEL_FILE: mv.model_path},
                      training_time_s=job.training_time_s)


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
    args = p.parse_args(argv)
    settings = Settings()
    job_id = args.job_id
    if job_id is None:
        from services.cli import hyperparameters_from_args
        try:
            hp = hyperparameters_from_args(args.config, args.set or [])
        except ValueError as e:
            p.error(str(e))
        request = TrainingRequest(batch_id=args.batch_id or f"job-{uuid.uuid4().hex[:12]}",
                                  dataset_uri=args.dataset, model_name=args.model_name,
                                  hyperparameters=hp)
        job, created = create_job(settings, request, num_workers=args.workers)
        job_id = job.id
        if created and current_submission_id():
            with session_factory(settings.db_url)() as s:
                repo.set_ray_job_id(s, job_id, current_submission_id())
    outcome = run_job(job_id, settings)
    print(json.dumps({"job_id": outcome.job_id, "status": outcome.status,
                      "verdict": outcome.verdict, "version": outcome.version,
                      "error": outcome.error}))
    return 0 if outcome.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
