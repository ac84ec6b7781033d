"""Record a validated request as a queued job: what the API, the ingress, the CLI and the
demo share. No torch and no training code here: inserting a row must not load the ML
stack (the Serve replica and the ingress actor import this module)."""

from __future__ import annotations

import threading

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory, upgrade
from services.messages import TrainingRequest

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


def create_job(
    settings: Settings,
    request: TrainingRequest,
    *,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[TrainingJob, bool]:
    """Record a validated request as a queued job; a known batch_id returns that job
    (``created`` False), so a redelivered or duplicated request never starts a second one."""
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        return repo.create_job(
            s,
            batch_id=request.batch_id,
            dataset_uri=request.dataset_uri,
            model_name=request.model_name,
            mode=request.mode,
            total_images=request.total_images,
            hyperparameters=request.hyperparameters.effective(),
            request=request.to_json(),
            num_workers=num_workers or settings.workers,
            use_gpu=settings.use_gpu if use_gpu is None else use_gpu,
        )
