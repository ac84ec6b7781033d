"""GET /models/{name}/versions/{v}/lineage, .../model_card.md and the version's page on an
embedded SQLite database and a local store: the starting weights told apart (none,
torchvision's by name, a parent version, a file), the tuning run of a tune job, 404 with a
detail for an unknown model or version, and promotions shown live on the page."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.config import Settings
from services.db import repo
from services.db.session import prepare_database, session_factory
from services.registry import promotion
from services.store.artifacts import MODEL_CARD_FILE, version_prefix
from services.store.storage import open_store
from training.hyperparams import Hyperparameters

MODEL = "digits"


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(
        home=tmp_path / "home",
        database_url=SecretStr(f"sqlite:///{tmp_path / 'l.db'}"),
        publish_events=False,
    )
    prepare_database(s)
    return s


@pytest.fixture
def client(settings):
    return TestClient(create_app(settings))


def add(settings: Settings, model: str = MODEL, mode: str = "train", **hp) -> tuple[int, int]:
    """A job with these hyperparameters and its version (fingerprinted); (job id, version)."""
    with session_factory(settings.db_url)() as s:
        n = repo.next_version(s, model)
        job, _ = repo.create_job(
            s,
            batch_id=f"{model}-{n}",
            dataset_uri=f"s3://datasets/{model}-{n}/",
            model_name=model,
            mode=mode,
            hyperparameters=Hyperparameters(**hp).effective(),
        )
        mv = repo.reserve_version(
            s,
            model,
            job_id=job.id,
            accuracy=0.95,
            precision=0.94,
            recall=0.93,
            f1=0.935,
            status="approved",
            gate={"status": "approved", "rules": []},
            dataset_fingerprint=f"{n:040d}",
            model_path=open_store(settings).uri(version_prefix(model, n) + "model.pt"),
        )
        s.commit()
        return job.id, mv.version


def test_lineage_names_the_data_the_job_and_the_starting_weights(settings, client):
    job_id, v1 = add(settings, "digits-backbone", backbone="resnet18")
    lin = client.get(f"/models/digits-backbone/versions/{v1}/lineage").json()
    assert lin["dataset_uri"] == "s3://datasets/digits-backbone-1/"
    assert lin["dataset_fingerprint"] == f"{1:040d}"
    assert (lin["job_id"], lin["batch_id"], lin["mode"]) == (job_id, "digits-backbone-1", "train")
    assert lin["starting_weights"] == {
        "kind": "none", "weights": None, "model_name": None, "version": None
    }  # fmt: skip
    assert lin["changed_hyperparameters"] == {"backbone": "resnet18"}
    assert lin["defaults"] == {"backbone": "mobilenet_v2"}
    assert lin["hyperparameters"]["phase1_lr"] == 1e-3 and lin["tuning"] is None

    parent = open_store(settings).uri(version_prefix("digits-backbone", 1) + "model.pt")
    _, v = add(settings, weights=parent)
    start = client.get(f"/models/{MODEL}/versions/{v}/lineage").json()["starting_weights"]
    assert start == {
        "kind": "model_version", "weights": parent, "model_name": "digits-backbone", "version": 1
    }  # fmt: skip
    child = open_store(settings).uri(version_prefix(MODEL, v) + "model.pt")
    _, grandchild = add(settings, weights=child)  # its lineage: v<v> of digits, then the backbone
    ancestors = client.get(f"/models/{MODEL}/versions/{grandchild}/lineage").json()["ancestors"]
    assert [(a["model_name"], a["version"]) for a in ancestors] == [
        (MODEL, v), ("digits-backbone", 1)
    ]  # fmt: skip
    assert ancestors[0]["starting_weights"]["kind"] == "model_version"
    assert ancestors[1]["dataset_uri"] == "s3://datasets/digits-backbone-1/"
    assert ancestors[1]["dataset_fingerprint"] == f"{1:040d}"
    assert ancestors[1]["starting_weights"]["kind"] == "none"
    _, v = add(settings, weights="IMAGENET1K_V1")
    start = client.get(f"/models/{MODEL}/versions/{v}/lineage").json()["starting_weights"]
    assert start["kind"] == "pretrained" and start["weights"] == "IMAGENET1K_V1"
    # the path of a version that is not this registry's (another store): a file
    other = "/elsewhere/models/digits-backbone/v1/model.pt"
    _, v = add(settings, weights=other)
    start = client.get(f"/models/{MODEL}/versions/{v}/lineage").json()["starting_weights"]
    assert start["kind"] == "file" and start["weights"] == other


def test_a_cycle_of_parents_ends_the_walk(settings, client):
    """v1 names v2's model.pt (made later, at that path) and v2 names v1's: v2's ancestors
    are v1, then v2 itself (v1 started from it), and the walk stops there."""
    store = open_store(settings)
    _, v1 = add(settings, weights=store.uri(version_prefix(MODEL, 2) + "model.pt"))
    _, v2 = add(settings, weights=store.uri(version_prefix(MODEL, 1) + "model.pt"))
    ancestors = client.get(f"/models/{MODEL}/versions/{v2}/lineage").json()["ancestors"]
    assert [a["version"] for a in ancestors] == [1, 2]


def test_a_tune_jobs_lineage_names_its_search(settings, client):
    job_id, v = add(settings, mode="tune")
    with session_factory(settings.db_url)() as s:
        run = repo.create_tuning_run(
            s,
            job_id,
            grid={"phase1_lr": [1e-3, 3e-4]},
            base_hyperparameters={},
            k_folds=3,
            metric="val_loss",
            mode="min",
            scheduler="asha",
        )
        for i in range(2):
            repo.record_trial(
                s, run.id, trial_index=i, trial_id=f"t{i}", config={}, status="completed",
                stopped_at=2, epochs=[],
            )  # fmt: skip
        run.best_config = {"phase1_lr": 3e-4}
        s.commit()
    tuning = client.get(f"/models/{MODEL}/versions/{v}/lineage").json()["tuning"]
    assert tuning["run_id"] == run.id and tuning["trials"] == 2 and tuning["k_folds"] == 3
    assert tuning["best_config"] == {"phase1_lr": 3e-4} and tuning["scheduler"] == "asha"


def test_unknown_model_or_version_is_404_with_a_detail(settings, client):
    add(settings)
    for path in ("lineage", MODEL_CARD_FILE):
        r = client.get(f"/models/nope/versions/1/{path}")
        assert r.status_code == 404 and r.json()["detail"] == "no version 1 of model nope"
        r = client.get(f"/models/{MODEL}/versions/9/{path}")
        assert r.status_code == 404 and r.json()["detail"] == f"no version 9 of model {MODEL}"
    assert client.get("/ui/models/nope/versions/1").status_code == 404
    assert client.get(f"/models/{MODEL}/versions/0/lineage").status_code == 422


def test_the_stored_card_and_the_live_page(settings, client):
    _, v = add(settings)
    r = client.get(f"/models/{MODEL}/versions/{v}/{MODEL_CARD_FILE}")
    assert r.status_code == 404 and "has no model_card.md" in r.json()["detail"]
    store = open_store(settings)
    prefix = version_prefix(MODEL, v)
    store.put_bytes(prefix + MODEL_CARD_FILE, b"# Model card: digits v1\n")
    store.put_bytes(
        prefix + "health.json",
        json.dumps({"images": 36, "per_class": {"<b>": 36}, "findings": []}).encode(),
    )
    r = client.get(f"/models/{MODEL}/versions/{v}/{MODEL_CARD_FILE}")
    assert r.status_code == 200 and r.text == "# Model card: digits v1\n"
    assert r.headers["content-type"].startswith("text/markdown")

    page = client.get(f"/ui/models/{MODEL}/versions/{v}").text
    assert "<h1>Model card: digits v1</h1>" in page and "&lt;b&gt;" in page
    assert "No alias points here by a recorded move." in page
    assert f'href="/models/{MODEL}/versions/{v}/lineage"' in page
    with session_factory(settings.db_url)() as s:  # a person promotes it later
        promotion.promote(s, settings, MODEL, v, "staging", by="ana", reason="try it")
        s.commit()
    page = client.get(f"/ui/models/{MODEL}/versions/{v}").text
    assert "<td>staging</td>" in page and "<td>ana</td>" in page and "<td>try it</td>" in page
