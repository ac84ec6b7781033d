"""The command line and the demo, run as a user runs them (in-process, the session's Ray)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from services import demo
from services.cli import main
from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.store.storage import open_store
from tests.conftest import TINY
from training.model import build_model

pytestmark = pytest.mark.integration


def test_train_command_with_weights_from_a_file_and_skipped_images(
    make_dataset, tmp_path, ray_cluster, pg_url, capsys, monkeypatch
):
    monkeypatch.setenv("COLECIONADOR_PUBLISH_EVENTS", "false")
    monkeypatch.setenv("COLECIONADOR_DATABASE_URL", pg_url)  # the production database
    source = build_model("mobilenet_v3_small", 10)  # weights "the tests make"
    torch.save(source.state_dict(), tmp_path / "backbone.pt")
    root = make_dataset(per_class=12, corrupt=2)
    sets = [f"{k}={v}" for k, v in TINY.items()] + [
        f"weights={tmp_path / 'backbone.pt'}",
        "on_bad_image=skip",
        "preflight=true",
        "use_suggested_lr=true",
    ]
    argv = ["train", "--dataset", str(root), "--model-name", "cli", "--batch-id", "cli-1"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "gate APPROVED -> version 1" in out and "skipped 2 unreadable image(s)" in out

    settings = Settings()
    store = open_store(settings)
    pre = json.loads(store.get_bytes("models/cli/v1/preflight.json"))
    assert "preflight: overfit one batch" in out and pre["overfit"]["passed"]
    with session_factory(settings.db_url)() as s:
        job = repo.get_job_by_batch(s, "cli-1")
        hps = repo.hyperparameters(s, job.id)
        assert job.status == "success" and hps["on_bad_image"] == "skip"
        # the LR range test's suggestion became phase1_lr, recorded, and used in epoch 1
        assert hps["phase1_lr"] == pytest.approx(pre["lr_range"]["suggested_lr"])
        assert repo.epoch_rows(s, job.id)[0]["lr"] == pytest.approx(hps["phase1_lr"])
    assert store.get_bytes(f"reports/job-{job.id}/lr_range.png")[:4] == b"\x89PNG"
    metrics = json.loads(store.get_bytes("models/cli/v1/metrics.json"))
    assert [b["path"] for b in metrics["skipped_images"]] == [
        "class_0/broken_0.png",
        "class_0/broken_1.png",
    ]
    # the first conv stays frozen in both phases (unfreeze_last=5): it is the file's tensor
    pkg = torch.load(store.path("models/cli/v1/model.pt"), weights_only=True)
    assert torch.equal(
        pkg["state_dict"]["features.0.0.weight"], source.state_dict()["features.0.0.weight"]
    )

    # the same batch id again starts nothing; status shows the job
    assert main(argv) == 0
    assert "not started again" in capsys.readouterr().out
    assert main(["status", str(job.id)]) == 0
    out = capsys.readouterr().out
    assert "success" in out and "model cli v1: approved" in out and "epoch   2 phase 2" in out


def test_demo_runs_both_jobs_then_one_round_of_the_loop(ray_cluster, monkeypatch, capsys):
    monkeypatch.setenv("COLECIONADOR_PUBLISH_EVENTS", "false")
    quick = {
        "image_size": 16,
        "batch_size": 64,
        "gate_accuracy": 0.0,
        "gate_precision": 0.0,
        "gate_recall": 0.0,
    }
    monkeypatch.setattr(
        demo, "BACKBONE_RECIPE", {**demo.BACKBONE_RECIPE, **quick, "phase2_epochs": 1}
    )
    monkeypatch.setattr(
        demo,
        "TRANSFER_RECIPE",
        {**demo.TRANSFER_RECIPE, **quick, "phase1_epochs": 1, "phase2_epochs": 1},
    )
    settings = Settings()
    backbone, outcome, loop = demo.run_demo(settings)
    assert backbone.status == outcome.status == "success"
    assert loop is not None and loop.status == "success"
    out = capsys.readouterr().out
    assert "no pretrained weights can be downloaded here" in out
    assert f"test images {outcome.metrics['n']}" in out  # the accuracy figure, printed
    assert f"accuracy  {outcome.metrics['accuracy']:.4f}" in out
    with session_factory(settings.db_url)() as s:
        second = repo.get_job(s, outcome.job_id)
        assert repo.hyperparameters(s, second.id)["weights"] == backbone.artifacts["model.pt"]
        assert [v.model_name for v in repo.job_versions(s, backbone.job_id)] == ["digits-backbone"]
        assert [v.model_name for v in repo.job_versions(s, outcome.job_id)] == ["digits"]
        assert second.total_images is None and len(repo.epoch_rows(s, second.id)) == 2
        third = repo.get_job(s, loop.job_id)
        assert third.mode == "predict" and third.status == "success"
        assert third.request["label_next"] == demo.LABEL_NEXT == 30

    # the pool is held out: none of its digits is in the training folder, all are predicted
    root = settings.resolved_home / "demo"
    pool = sorted(p.name for p in (root / "pool-5-9").glob("*.png"))
    trained = {p.name for p in (root / "digits-5-9").rglob("*.png")}
    assert len(pool) > 100 and not trained & set(pool) and third.total_images == len(pool)
    with (root / "loop" / "to_label.csv").open(newline="") as f:
        picks = list(csv.DictReader(f))
    assert [int(p["rank"]) for p in picks] == list(range(1, 31))
    assert {p["path"] for p in picks} <= set(pool)
    assert (root / "loop" / "to_label.png").read_bytes()[:4] == b"\x89PNG"
    assert "to label next: 30" in out and all(p["path"] in out for p in picks)
    assert "the pool: " in out and f"{root / 'loop' / 'to_label.png'}" in out
