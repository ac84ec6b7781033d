"""One job end to end through the real TorchTrainer (2 workers), on SQLite and PostgreSQL,
with the event read back from a real RabbitMQ queue."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import uuid

import aio_pika
import pytest
import torch

from services.db import repo
from services.db.models import ModelVersion, TrainingJob
from services.db.session import session_factory
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs.driver import run_job
from services.store.storage import open_store
from tests.amqp import delete_queues
from tests.conftest import AMQP_URL, TINY
from training.export import onnx_probs
from training.hyperparams import Hyperparameters
from training.model import build_model, load_model

pytestmark = pytest.mark.integration


def request(root, **hp) -> TrainingRequest:
    return TrainingRequest(
        batch_id=f"batch-{uuid.uuid4().hex[:8]}",
        dataset_uri=str(root),
        model_name="tiny",
        total_images=36,
        hyperparameters=Hyperparameters(**{**TINY, **hp}),
    )


def take_event(queue: str) -> dict:
    async def get():
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(queue, durable=True)
            msg = await q.get(timeout=10, fail=True)
            await msg.ack()
            return json.loads(msg.body)

    return asyncio.run(get())


def test_tiny_job_writes_every_table_the_artifacts_and_the_event(
    db_url, settings_for, make_dataset, ray_cluster, events_queue
):
    promoted = events_queue.replace("ModelEvaluation", "ModelPromoted")
    settings = settings_for(
        db_url, publish_events=True, events_queue=events_queue, promotions_queue=promoted
    )
    req = request(make_dataset(per_class=12, size=16), export_onnx=True)
    job, created = create_job(settings, req)
    assert created and job.status == "queued"

    outcome = run_job(job.id, settings)
    assert outcome.status == "success", outcome.error
    assert outcome.verdict == "approved" and outcome.version == 1

    with session_factory(settings.db_url)() as s:
        row = s.get(TrainingJob, job.id)
        assert row.status == "success" and row.error is None and row.num_workers == 2
        assert row.accuracy == pytest.approx(outcome.metrics["accuracy"])
        assert row.training_time_s > 0 and row.started_at <= row.finished_at
        epochs = repo.epoch_rows(s, job.id)
        assert [(r["epoch"], r["phase"], r["lr"]) for r in epochs] == [(1, 1, 1e-3), (2, 2, 1e-5)]
        assert all(
            r[k] is not None
            for r in epochs
            for k in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")
        )
        hps = repo.hyperparameters(s, job.id)
        assert hps == Hyperparameters(**{**TINY, "export_onnx": True}).effective()
        (mv,) = s.query(ModelVersion).filter_by(job_id=job.id).all()
        assert (mv.model_name, mv.version, mv.status) == ("tiny", 1, "approved")
        assert [r["metric"] for r in mv.gate["rules"]] == ["accuracy", "precision", "recall"]
        assert mv.accuracy == pytest.approx(row.accuracy)

    store = open_store(settings)
    prefix = "models/tiny/v1/"
    errors = json.loads(store.get_bytes(prefix + "errors.json"))
    expected = {
        "confusion_matrix.png",
        "curves.png",
        "metrics.json",
        "model.pt",
        "model.onnx",
        "health.json",
        "errors.json",
        "reliability.png",
        "data_profile.json",
        "model_card.md",
    } | ({"errors.png"} if errors["errors"] else set())
    assert {k[len(prefix) :] for k in store.list(prefix)} == expected
    assert errors["test_images"] == 4 and len(errors["worst"]) == errors["errors"]
    assert all(w["path"].startswith("class_") for w in errors["worst"])
    health = json.loads(store.get_bytes(prefix + "health.json"))
    assert health["per_class"] == {"class_0": 12, "class_1": 12, "class_2": 12}
    assert health == json.loads(store.get_bytes(f"reports/job-{job.id}/health.json"))
    assert mv.model_path == store.uri(prefix + "model.pt")
    for png in ("curves.png", "confusion_matrix.png"):
        assert store.get_bytes(prefix + png)[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads(store.get_bytes(prefix + "metrics.json"))
    assert metrics["split"] == {"train": 28, "val": 4, "test": 4}
    assert metrics["test"]["n"] == 4 and len(metrics["history"]) == 2
    model, pkg = load_model(torch.load(store.path(prefix + "model.pt"), weights_only=True))
    assert pkg["classes"] == ["class_0", "class_1", "class_2"]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    onnx = metrics["onnx"]  # model.onnx agrees with model.pt on the test split
    assert onnx["passed"] and onnx["top1_agreement"] == 1.0 and onnx["test_images"] == 4
    assert onnx["max_abs_diff"] <= onnx["tolerance"] and onnx["opset"] >= 17
    assert onnx["input"]["shape"] == ["batch", 3, 32, 32]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert onnx_probs(store.get_bytes(prefix + "model.onnx"), x.numpy()) == pytest.approx(
            torch.softmax(model(x) / pkg["temperature"], 1).numpy(), abs=1e-4
        )  # model.onnx divides the logits by model.pt's temperature, as every predict path
    assert metrics["calibration"]["temperature"] == pkg["temperature"] > 0

    event = take_event(events_queue)
    assert set(event) >= {
        "job_id",
        "batch_id",
        "model_name",
        "version",
        "status",
        "metrics",
        "gate",
        "artifact_uri",
        "finished_at",
    }
    assert (event["job_id"], event["batch_id"], event["version"], event["status"]) == (
        job.id,
        req.batch_id,
        1,
        "approved",
    )
    assert set(event["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    assert event["gate"] == {"accuracy": True, "precision": True, "recall": True}
    assert event["artifact_uri"] == mv.model_path
    # approved: production by itself, in the same transaction, with its ModelPromoted event
    try:
        promotion = take_event(promoted)
    finally:
        delete_queues(promoted)
    assert (promotion["model_name"], promotion["alias"], promotion["version"]) == (
        "tiny",
        "production",
        1,
    )
    assert (promotion["by"], promotion["job_id"], promotion["overrode_gate"]) == (
        "gate",
        job.id,
        False,
    )
    with session_factory(db_url)() as s:
        assert repo.version_for_alias(s, "tiny", "production") == 1
    check_card_and_lineage(settings, job.id, req, prefix, metrics)

    # the same request again is the same job, and running it again does nothing
    again, created = create_job(settings, req)
    assert not created and again.id == job.id
    assert run_job(job.id, settings).version == 1


def check_card_and_lineage(settings, job_id: int, req, prefix: str, metrics: dict) -> None:
    """model_card.md written with the version (the gate's promotion in it) and the lineage
    route: the listing's fingerprint on the row, the job, no starting weights."""
    from fastapi.testclient import TestClient

    from services.api import create_app
    from training.data import discover, fingerprint

    card = open_store(settings).get_bytes(prefix + "model_card.md").decode()
    assert card.startswith("# Model card: tiny v1\n") and "**approved**" in card
    assert "3 classes, 36 images: 28 train / 4 val / 4 test" in card
    assert f"| accuracy | {metrics['test']['accuracy']:.4f} | > 0.00 | pass |" in card
    assert "| production | – | gate | approved by the quality gate" in card
    assert '| backbone | "mobilenet_v3_small" | "mobilenet_v2" |' in card
    expected = fingerprint(discover(req.dataset_uri), 32)
    with TestClient(create_app(settings)) as client:
        lin = client.get("/models/tiny/versions/1/lineage").json()
        assert client.get("/models/tiny/versions/1/model_card.md").text == card
    assert (lin["job_id"], lin["batch_id"], lin["dataset_uri"]) == (
        job_id,
        req.batch_id,
        req.dataset_uri,
    )
    assert lin["dataset_fingerprint"] == expected and lin["starting_weights"]["kind"] == "none"


@pytest.mark.parametrize(
    "case",
    [
        "small_class",
        "unreadable",
        "missing",
        "bad_weights",
        "leakage",
        "weights_offline",
        "weights_unknown",
    ],
)
def test_a_failing_step_fails_the_job_with_its_reason_and_writes_no_version(
    case, db_url, settings_for, make_dataset, tmp_path, monkeypatch
):
    settings = settings_for(db_url)
    hp: dict = {}
    if case == "small_class":
        root, reason = (
            make_dataset(per_class=[12, 12, 3]),
            "dataset: classes with fewer than 5 images: class_2 (3)",
        )
    elif case == "unreadable":
        root, reason = (
            make_dataset(per_class=12, corrupt=1),
            "dataset: 1 unreadable image(s): class_0/broken_0.png",
        )
    elif case == "missing":
        root, reason = tmp_path / "nowhere", "dataset: dataset not found"
    elif case == "leakage":  # every image twice: copies land on both sides of the split
        root = make_dataset(per_class=12)
        for p in sorted(root.rglob("*.png")):
            shutil.copy(p, p.with_name("again_" + p.name))
        reason, hp = "health: ", {"fail_on": ["leakage"]}
    elif case == "weights_offline":  # imagenet weights, not cached, no network

        def offline(*args, **kwargs):
            raise urllib.error.URLError("no network")

        monkeypatch.setattr(torch.hub, "urlopen", offline)
        folder = settings.resolved_home / "torch" / "hub" / "checkpoints"
        root, hp = make_dataset(per_class=12), {"weights": "imagenet"}
        reason = (
            "weights: imagenet weights for mobilenet_v3_small "
            "(MobileNet_V3_Small_Weights.IMAGENET1K_V1) are not cached and cannot be "
            f"downloaded (no network): put mobilenet_v3_small-047dcff4.pth in {folder}"
        )
    elif case == "weights_unknown":
        root, hp = make_dataset(per_class=12), {"weights": "IMAGENET1K_V2"}
        reason = (
            "weights: unknown weights 'IMAGENET1K_V2' for mobilenet_v3_small; "
            "valid names: imagenet, IMAGENET1K_V1, DEFAULT"
        )
    else:
        torch.save(build_model("resnet18", 3).state_dict(), tmp_path / "resnet.pt")
        root, reason = make_dataset(per_class=12), "weights: weights do not fit the backbone"
        hp = {"weights": str(tmp_path / "resnet.pt")}
    job, _ = create_job(settings, request(root, **hp))
    outcome = run_job(job.id, settings)
    assert outcome.status == "failed" and outcome.error.startswith(reason)
    with session_factory(settings.db_url)() as s:
        row = s.get(TrainingJob, job.id)
        assert (row.status, row.error) == ("failed", outcome.error)
        assert row.finished_at is not None
        assert repo.job_versions(s, job.id) == [] and repo.epoch_rows(s, job.id) == []
    store = open_store(settings)
    assert store.list("models/") == []
    stored = json.loads(store.get_bytes(f"events/job-{job.id}.json"))
    assert stored["event"]["status"] == "failed" and stored["event"]["error"] == outcome.error
    if case in ("small_class", "unreadable", "leakage"):  # the report says what is wrong
        kinds = {
            f["kind"]
            for f in json.loads(store.get_bytes(f"reports/job-{job.id}/health.json"))["findings"]
        }
        assert case in kinds
    if case == "leakage":
        assert "cross the train/val/test split" in outcome.error


def test_hostile_files_are_skipped_and_listed_and_the_job_trains(
    pg_url, settings_for, make_dataset, ray_cluster
):
    """A decompression-bomb header, an empty file, a truncated PNG and a 60 MB file are
    unreadable images: with on_bad_image=skip the job trains without them and lists each."""
    from tests.unit.test_data import _png_claiming

    root = make_dataset(per_class=12, size=16)
    bad = root / "class_0"
    (bad / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    (bad / "empty.png").write_bytes(b"")
    good = (root / "class_1" / "000.png").read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    with open(bad / "huge.png", "wb") as f:
        f.truncate(60 * 2**20)
    settings = settings_for(pg_url)
    job, _ = create_job(settings, request(root, on_bad_image="skip"))
    outcome = run_job(job.id, settings, say=lambda _m: None)
    assert outcome.status == "success", outcome.error
    metrics = json.loads(
        open_store(settings).get_bytes(f"models/tiny/v{outcome.version}/metrics.json")
    )
    skipped = {s["path"]: s["reason"] for s in metrics["skipped_images"]}
    assert set(skipped) == {f"class_0/{n}.png" for n in ("bomb", "empty", "truncated", "huge")}
    assert "decompression bomb" in skipped["class_0/bomb.png"]
    assert "over the 50 MB limit" in skipped["class_0/huge.png"]
    assert metrics["split"]["train"] + metrics["split"]["val"] + metrics["split"]["test"] == 36
