"""What ``colecionador status`` prints: a line per job, or one job in detail (its row,
health findings, epochs and versions). It answers without the store too."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from services.config import Settings
from services.db.models import TrainingJob
from services.store.artifacts import HEALTH_FILE


def print_jobs(jobs: Sequence[TrainingJob]) -> None:
    print(f"{'id':>4}  {'status':<10} {'mode':<5} {'model':<16} {'accuracy':>8}  batch")
    for j in jobs:
        acc = f"{j.accuracy:.4f}" if j.accuracy is not None else "-"
        print(f"{j.id:>4}  {j.status:<10} {j.mode:<5} {j.model_name:<16} {acc:>8}  {j.batch_id}")


def _health_lines(settings: Settings, job_id: int) -> list[str]:
    from services.store.artifacts import report_key
    from services.store.storage import StoreError, open_store, read_json

    try:  # status answers without the store too
        health = read_json(open_store(settings), report_key(job_id, HEALTH_FILE))
    except (StoreError, OSError):
        health = None
    return [f"  health: {f['message']}" for f in (health or {}).get("findings", [])]


def print_job(s: Session, settings: Settings, job: TrainingJob) -> None:
    from services.db import repo

    print(f"job {job.id}  {job.status}  batch {job.batch_id}  model {job.model_name}")
    print(f"  dataset {job.dataset_uri}  workers {job.num_workers}  gpu {job.use_gpu}")
    print(f"  created {job.created_at}  started {job.started_at}  finished {job.finished_at}")
    if job.ray_job_id:
        print(f"  Ray job {job.ray_job_id}  (attempt {job.attempts})")
    if job.error:
        print(f"  error: {job.error}")
    for line in _health_lines(settings, job.id):
        print(line)
    for r in repo.epoch_rows(s, job.id):
        print(
            f"  epoch {r['epoch']:3d} phase {r['phase']} loss {r['loss']:.4f} "
            f"acc {r['accuracy']:.4f} val_loss {r['val_loss']:.4f} "
            f"val_acc {r['val_accuracy']:.4f} lr {r['lr']:.2g}"
        )
    for mv in repo.job_versions(s, job.id):
        print(
            f"  model {mv.model_name} v{mv.version}: {mv.status}  accuracy {mv.accuracy:.4f}"
            f"  precision {mv.precision:.4f}  recall {mv.recall:.4f}  {mv.model_path}"
        )
