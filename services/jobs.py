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
from services.db.models import TrainingJob
from services.db.session import session_factory, upgrade
from services.messages import EventMetrics, ModelEvaluationEvent, TrainingRequest
from services.steps import StepFailed, init_ray, one_line
from services.storage import (Store, StoreError, fetch_dataset, fetch_file, open_store,
                              report_key, version_prefix)
from training import data as datasets
from training.callbacks import build_callbacks
from training.data import DecodedDataset, Split
from training.errors import error_report, worst_examples_png
from training.evaluate import GateResult, predict_probs, quality_gate
from training.health import failing, health_report
from training.metrics import classification_metrics
from training.hyperparams import Hyperparameters, load_hyperparameters
from training.loop import TrainData
from training.model import build_model, load_backbone_weights, load_model, read_state_dict
from training.plots import confusion_matrix_png, curves_png
from training.ray_worker import MODEL_FILE

log = logging.getLogger("colecionador.jobs")


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


# ----------------------------------------------------------------- the steps
def _put_report(store: Store, job_id: int, name: str, payload: bytes | dict) -> None:
    """reports/job-<id>/<name>: kept for every job, failed ones too."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, indent=2).encode()
    store.put_bytes(report_key(job_id, name), data)


def inspect_dataset(folder: Path, hp: Hyperparameters
                    ) -> tuple[DecodedDataset, Split | None, dict[str, Any]]:
    """Decode every image (unreadable ones left out and listed), split when every class
    has min_per_class images (None otherwise), and the health report of both. Nothing
    here fails for what the report finds: the caller decides (ValueError: no dataset)."""
    decoded = datasets.decode(datasets.discover(folder), hp.image_size, "skip")
    counts = np.bincount(decoded.labels, minlength=len(decoded.classes))
    split = (datasets.split(decoded.labels, hp.val_frac, hp.test_frac, hp.val_max,
                            hp.test_max, hp.seed)
             if counts.min() >= hp.min_per_class else None)
    report = health_report(decoded, split, min_per_class=hp.min_per_class,
                           max_imbalance=hp.max_imbalance,
                           near_distance=hp.near_duplicate_distance)
    return decoded, split, report


def _load_data(job: TrainingJob, hp: Hyperparameters, settings: Settings, store: Store,
               say: Callable[[str], None]) -> tuple[DecodedDataset, Split, dict[str, Any]]:
    """Fetch, decode and split; the health report is written before any check can fail
    the job, so a job failed for its data says what is wrong with it."""
    try:
        folder = fetch_dataset(job.dataset_uri, settings)
    except (FileNotFoundError, ValueError) as e:
        raise StepFailed("dataset", one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - a store error of any kind
        raise StepFailed("dataset", one_line(e)) from e
    try:
        decoded, split, report = inspect_dataset(folder, hp)
    except ValueError as e:
        raise StepFailed("dataset", one_line(e)) from None
    _put_report(store, job.id, "health.json", report)
    for f in report["findings"]:
        say(f"health: {f['message']}")
    try:
        datasets.check_bad(decoded.bad, hp.on_bad_image)
        datasets.check_min_per_class(decoded.labels, decoded.classes, hp.min_per_class)
    except ValueError as e:
        raise StepFailed("dataset", one_line(e)) from None
    fails = failing(report, hp.fail_on)
    if fails:
        raise StepFailed("health", "; ".join(fails))
    return decoded, split, report


def _preflight(job: TrainingJob, hp: Hyperparameters, train_data: TrainData,
               backbone_state: Any, store: Store, settings: Settings,
               say: Callable[[str], None]) -> tuple[Hyperparameters, dict[str, Any] | None]:
    """Overfit one batch and the LR range test, as a Ray task with a worker's resources
    (a GPU with --gpu); fails the job if one batch cannot be overfit; with
    use_suggested_lr the suggestion becomes phase1_lr (recorded with the job)."""
    if not hp.preflight:
        return hp, None
    import ray

    from training.preflight import preflight

    def run(hp_values: dict, data: TrainData, state: Any) -> dict[str, Any]:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return preflight(Hyperparameters(**hp_values), data, state, device)

    init_ray(settings)
    task = ray.remote(num_cpus=1, num_gpus=1 if job.use_gpu else 0)(run)
    try:
        result = ray.get(task.remote(hp.effective(), train_data, backbone_state))
    except Exception as e:  # noqa: BLE001 - the task's error, whatever it is
        raise StepFailed("preflight", one_line(e)) from e
    _put_report(store, job.id, "lr_range.png", result.pop("png"))
    _put_report(store, job.id, "preflight.json", result)
    overfit, suggested = result["overfit"], result["lr_range"]["suggested_lr"]
    say(f"preflight: {overfit['message']}; LR range test suggests phase1_lr {suggested:.2g}")
    if not overfit["passed"]:
        raise StepFailed("preflight", overfit["message"])
    if hp.use_suggested_lr:
        hp = Hyperparameters(**{**hp.effective(), "phase1_lr": suggested})
        with session_factory(settings.db_url)() as s:
            repo.set_hyperparameters(s, job.id, hp.effective())  # all of them, recorded
    return hp, result


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
            prefix = version_prefix(job.model_name, version)
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


# --------------------------------------------------------------- the whole job
def run_job(job_id: int, settings: Settings,
            say: Callable[[str], None] = lambda m: print(m, flush=True)) -> JobOutcome:
    """Take job ``job_id`` through every step; never raises for a failing step.

    A ``mode: tune`` job first runs the search (services/tuning_job.py), records it,
    merges the best config into the job's hyperparameters, then goes through the same
    train -> evaluate -> gate -> store -> publish steps with them."""
    prepare_database(settings)
    sf = session_factory(settings.db_url)
    with sf() as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        resume = job.status in ("training", "evaluating")
        hp = Hyperparameters(**repo.hyperparameters(s, job_id))
        if not repo.start_job(s, job_id, current_submission_id()):  # final, or cancelled
            s.expire_all()
            return _outcome_from_db(settings, repo.get_job(s, job_id))
    store: Store | None = None
    finished_at = datetime.now(timezone.utc)
    try:
        try:
            store = open_store(settings)
        except Exception as e:  # noqa: BLE001 - any store error fails the job, recorded
            raise StepFailed("store", one_line(e)) from e
        decoded, split, health = _load_data(job, hp, settings, store, say)
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
            from services.tuning_job import tune_step
            hp, tuning = tune_step(job, hp, decoded, split, backbone_state, store, settings,
                                   say)
        train_data = TrainData(decoded.images, decoded.labels, split.train, split.val,
                               decoded.classes)
        hp, preflight = _preflight(job, hp, train_data, backbone_state, store, settings, say)
        package, summary, training_time = _train(job, hp, train_data, backbone_state,
                                                 store, settings, resume)
        with sf() as s:
            repo.set_status(s, job_id, "evaluating", training_time_s=training_time)
            history = repo.epoch_rows(s, job_id)
        model, _ = load_model(package)
        test_x, test_y = decoded.images[split.test], decoded.labels[split.test]
        try:
            probs = predict_probs(model, test_x)
            metrics = classification_metrics(test_y, probs, decoded.classes)
            errors = error_report(test_y, probs, decoded.classes,
                                  [decoded.paths[i] for i in split.test])
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
            "health.json": json.dumps(health, indent=2).encode(),
            "errors.json": json.dumps(errors, indent=2).encode(),
        }
        worst = worst_examples_png(errors, test_x)
        if worst is not None:
            files["errors.png"] = worst
        if preflight is not None:
            files["preflight.json"] = json.dumps(preflight, indent=2).encode()
        if tuning is not None:
            files["tuning.json"] = json.dumps(tuning, indent=2).encode()
        version, uris = _store_version(settings, store, job, files, metrics, gate)
        finished_at = datetime.now(timezone.utc)
        with sf() as s:
            repo.finish_job(s, job_id, "success", accuracy=metrics["accuracy"], error=None)
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
            repo.finish_job(s, job_id, "failed", error=reason)
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
        try:
            hp = load_hyperparameters(args.config, args.set or [])
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
