"""Record a validated request as a queued job: what the API, the ingress, the CLI and the
demo share. No torch and no training code here: inserting a row must not load the ML
stack (the Serve replica and the ingress actor import this module)."""

from __future__ import annotations

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import prepare_database, session_factory
from services.intake.request import TrainingRequest
from services.intake.spec import JobSpec


def create_job(
    settings: Settings,
    request: TrainingRequest,
    *,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[TrainingJob, bool]:
    """Record a validated request as a queued job; a known batch_id returns that job
    (``created`` False), so a redelivered or duplicated request never starts a second one.
    The row holds the job's spec (services/intake/spec.py: its columns, hyperparameters and
    request JSON), which the driver reads back with ``JobSpec.from_job``."""
    spec = JobSpec.from_request(
        request,
        num_workers=num_workers or settings.workers,
        use_gpu=settings.use_gpu if use_gpu is None else use_gpu,
    )
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        return repo.create_job(
            s,
            batch_id=spec.batch_id,
            dataset_uri=spec.dataset_uri,
            model_name=spec.model_name,
            mode=spec.mode,
            total_images=request.total_images,
            hyperparameters=spec.hyperparameters.effective(),
            request=request.to_json(),
            num_workers=spec.num_workers,
            use_gpu=spec.use_gpu,
        )
