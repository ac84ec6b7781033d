"""A job's spec (services/intake/spec.py): what the edge built is what the driver reads
back from the row with one call, for each mode, on an embedded SQLite database."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.intake.records import create_job
from services.intake.request import parse_request
from services.intake.spec import JobSpec


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        home=tmp_path / "home", database_url=SecretStr(f"sqlite:///{tmp_path / 's.db'}")
    )


def _round_trip(settings: Settings, body: dict) -> tuple[JobSpec, JobSpec]:
    request = parse_request(body)
    row, _ = create_job(settings, request, num_workers=3)
    with session_factory(settings.db_url)() as s:
        stored = JobSpec.from_job(row, repo.hyperparameters(s, row.id))
    return JobSpec.from_request(request, 3, settings.use_gpu), stored


@pytest.mark.parametrize(
    "body",
    [
        {"batch_id": "t", "dataset_uri": "/d", "hyperparameters": {"phase1_lr": 0.01}},
        {
            "batch_id": "u",
            "dataset_uri": "/d",
            "mode": "tune",
            "tuning": {"grid": {"phase1_lr": [0.01, 0.1]}, "k_folds": 3},
        },
        {
            "batch_id": "p",
            "dataset_uri": "/d",
            "mode": "predict",
            "model": "m@production",
            "top_k": 2,
            "label_next": 5,
            "out_uri": "/out",
        },
    ],
)
def test_the_driver_reads_back_the_spec_the_edge_built(settings, body):
    built, stored = _round_trip(settings, body)
    assert stored == built
    assert stored.hyperparameters.effective() == built.hyperparameters.effective()
    assert stored.workers(1) == 3


def test_a_tune_job_recorded_without_a_search_gets_the_default_one(settings):
    built, stored = _round_trip(settings, {"batch_id": "v", "dataset_uri": "/d", "mode": "tune"})
    assert stored == built and stored.tuning is not None
    assert stored.tuning.strategy == "grid" and stored.searched_values() == {}


def test_the_spec_is_frozen(settings):
    _, stored = _round_trip(settings, {"batch_id": "w", "dataset_uri": "/d"})
    with pytest.raises(ValidationError):
        stored.mode = "tune"  # type: ignore[misc]
    assert stored.tuning is None and stored.searched_values() is None
