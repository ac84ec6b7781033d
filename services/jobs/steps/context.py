"""What every step of a started job shares besides its spec (services/intake/spec.py):
the job's id, the settings, the store, the database's sessions, the progress callback and
whether this attempt resumes an earlier one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.config import Settings
from services.jobs.steps.report import Say
from services.store.storage import Store


@dataclass(frozen=True)
class StepContext:
    job_id: int
    settings: Settings
    store: Store
    sessions: Callable[[], Session]  # services.db.session.session_factory(settings.db_url)
    say: Say
    resume: bool = False  # the row was training or evaluating: Train resumes its checkpoint
