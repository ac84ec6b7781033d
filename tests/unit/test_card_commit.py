"""model_card.md in the version's commit (services/jobs/driver.py commit_version, on an
embedded SQLite database and a local store, no training): the card names the gate's
promotion and the fingerprint recorded on the row; a store that fails on the card rolls
the whole version back (no row, no files, the job not finished)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from services.config import Settings
from services.db import repo
from services.db.session import prepare_database, session_factory
from services.errors import StepFailed
from services.jobs import steps
from services.jobs.commit import commit_version
from services.store.artifacts import MODEL_CARD_FILE, version_prefix
from services.store.storage import LocalStore, StoreError
from training.evaluate import GateResult, GateRule
from training.hyperparams import Hyperparameters

METRICS = {"accuracy": 0.95, "precision": 0.94, "recall": 0.93, "f1": 0.935}


class CardRefused(LocalStore):
    """A store that takes every file but the card (a store gone away at the last put)."""

    def put_bytes(self, key: str, data: bytes) -> str:
        if key.endswith(MODEL_CARD_FILE):
            raise StoreError(f"cannot write {key}: connection reset")
        return super().put_bytes(key, data)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path / "home", database_url=SecretStr(f"sqlite:///{tmp_path / 'c.db'}"))
    prepare_database(s)
    return s


def job(settings: Settings):
    with session_factory(settings.db_url)() as s:
        row, _ = repo.create_job(
            s,
            batch_id="b-1",
            dataset_uri="/data/b-1",
            model_name="m",
            hyperparameters=Hyperparameters(image_size=32).effective(),
        )
        return row


def evaluation() -> steps.Evaluation:
    gate = GateResult([GateRule("accuracy", 0.9, 0.95, True)])
    return steps.Evaluation({**METRICS, "n": 4}, {}, gate)


def files() -> dict[str, bytes]:
    metrics = {"test": {**METRICS, "n": 4, "classes": ["a", "b"]}, "split": {"test": 4}}
    return {"model.pt": b"weights", "metrics.json": json.dumps(metrics).encode()}


def test_the_card_is_committed_with_the_version_and_names_the_promotion(settings, tmp_path):
    store = LocalStore(tmp_path / "store")
    j = job(settings)
    version, uris, _ = commit_version(settings, store, j, files(), evaluation(), 1.0, "f" * 40)
    key = version_prefix("m", version) + MODEL_CARD_FILE
    assert uris[MODEL_CARD_FILE] == store.uri(key)
    card = store.get_bytes(key).decode()
    assert "# Model card: m v1" in card and "fingerprint " + "f" * 40 in card
    assert "| production | – | gate | approved by the quality gate (job 1) | no |" in card
    assert "| image_size | 32 | 224 |" in card
    with session_factory(settings.db_url)() as s:
        assert repo.get_version(s, "m", 1).dataset_fingerprint == "f" * 40


def test_a_store_that_fails_on_the_card_keeps_no_version(settings, tmp_path):
    store = CardRefused(tmp_path / "store")
    j = job(settings)
    with pytest.raises(StepFailed) as failed:
        commit_version(settings, store, j, files(), evaluation(), 1.0, "f" * 40)
    assert failed.value.step == "store" and "connection reset" in str(failed.value)
    assert store.list(version_prefix("m", 1)) == []
    with session_factory(settings.db_url)() as s:
        assert repo.get_version(s, "m", 1) is None
        assert repo.get_job(s, j.id).status == "queued"
        assert repo.version_for_alias(s, "m", "production") is None
