"""Model quality (issue #17): one tiny job with ``label_check=true`` through the real
TorchTrainer writes the calibration, label-issue and data-profile files into its version
folder and reports/, shows them on the job page; the next batch of the same model is
compared with that version's data (drift)."""

from __future__ import annotations

import io
import json
import shutil
import uuid

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from services.api import create_app
from services.db.session import session_factory
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.intake.spec import JobSpec
from services.jobs import steps
from services.jobs.driver import run_job
from services.jobs.steps.context import StepContext
from services.store.storage import open_store
from tests.conftest import TINY, write_dataset
from training.hyperparams import Hyperparameters

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def request(root, **hp) -> TrainingRequest:
    return TrainingRequest(
        batch_id=f"batch-{uuid.uuid4().hex[:8]}",
        dataset_uri=str(root),
        model_name="quality",
        hyperparameters=Hyperparameters(**{**TINY, **hp}),
    )


def test_label_check_calibration_and_drift(tmp_path, settings_for, ray_cluster):
    settings = settings_for(f"sqlite:///{tmp_path / 'quality.db'}")
    root = write_dataset(tmp_path / "v1", per_class=14, size=16)
    for i in range(2):  # two horizontal-bar images filed under vertical bars
        shutil.move(root / "class_0" / f"{i:03d}.png", root / "class_1" / f"flipped_{i}.png")
    job, _ = create_job(settings, request(root, label_check=True, seed=1))
    outcome = run_job(job.id, settings)
    assert outcome.status == "success" and outcome.version == 1, outcome.error

    store = open_store(settings)
    prefix = "models/quality/v1/"
    names = {k[len(prefix) :] for k in store.list(prefix)}
    assert {"reliability.png", "data_profile.json", "label_issues.json"} <= names
    assert store.get_bytes(prefix + "reliability.png")[:8] == PNG

    # calibration: ECE before / after in metrics.json, the temperature in model.pt
    metrics = json.loads(store.get_bytes(prefix + "metrics.json"))
    cal = metrics["calibration"]
    package = torch.load(io.BytesIO(store.get_bytes(prefix + "model.pt")), weights_only=True)
    assert package["temperature"] == cal["temperature"] == metrics["test"]["temperature"] > 0
    assert metrics["test"]["ece"] == cal["ece_after"] and cal["n_bins"] == 15
    assert cal["validation_images"] > 0 and len(cal["bins_after"]) == 15
    assert cal["fit_split"] == "validation" and "a train job" in cal["fit_split_why"]

    # label issues: every train + val image checked, ranked, the same in reports/
    issues = json.loads(store.get_bytes(prefix + "label_issues.json"))
    assert issues == json.loads(store.get_bytes(f"reports/job-{job.id}/label_issues.json"))
    split = metrics["split"]
    assert issues["images_checked"] == split["train"] + split["val"]
    assert [i["rank"] for i in issues["issues"]] == list(range(1, len(issues["issues"]) + 1))
    assert "trained model" in issues["source"]
    flipped = [i for i in issues["issues"] if "flipped_" in i["path"]]
    if issues["issues"]:
        assert store.get_bytes(prefix + "label_issues.png")[:8] == PNG
    test_paths = {
        t["path"] for t in json.loads(store.get_bytes(prefix + "data_profile.json"))["test"]
    }
    # a flipped image in train + val is found unless the split put it in the test split
    expected = {f"class_1/flipped_{i}.png" for i in range(2)} - test_paths
    assert {i["path"] for i in flipped} == expected, issues["issues"][:5]

    # the job page shows both
    with TestClient(create_app(settings)) as client:
        page = client.get(f"/ui/jobs/{job.id}").text
        assert 'id="label-issues"' in page and "ECE" in page
        assert client.get("/ui/models/quality/versions/1/reliability.png").content[:8] == PNG
        if issues["issues"]:
            png = client.get(f"/ui/jobs/{job.id}/label_issues.png")
            assert png.content[:8] == PNG

    # the next batch: a shifted class mix, a new class, and one of v1's test images
    profile = json.loads(store.get_bytes(prefix + "data_profile.json"))
    leaked = profile["test"][0]["path"]
    new = write_dataset(tmp_path / "v2", classes=4, per_class=[20, 6, 6, 8], size=16, seed=7)
    Image.open(root / leaked).save(new / "class_0" / "from_v1_test.png")
    job2, _ = create_job(settings, request(new))
    said: list[str] = []
    spec = JobSpec.from_job(job2, TINY)
    sessions = session_factory(settings.db_url)
    data = steps.prepare_data(spec, StepContext(job2.id, settings, store, sessions, said.append))
    drift = data.health["drift"]
    assert drift["production_version"] == 1 and drift["new_classes"] == ["class_3"]
    assert drift["total_variation"] > 0.1 and drift["chi_square"]["p_value"] < 0.05
    assert any(
        x["path"] == "class_0/from_v1_test.png" and x["previous_test_path"] == leaked
        for x in drift["leakage"]
    )
    kinds = {f["kind"] for f in data.health["findings"]}
    assert {"class_shift", "new_classes", "version_leakage"} <= kinds
    stored = json.loads(store.get_bytes(f"reports/job-{job2.id}/health.json"))
    assert stored["drift"]["leakage_count"] == drift["leakage_count"] >= 1
