"""The data path at scale (issue #15): a data set streamed from the S3 test server is
decoded once into shards in the store by tasks reading the bucket (nothing downloaded to
the driver), a job trains on them through Ray Data and a tuning run's folds read the same
shards; a data set larger than a small cluster's object store trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.db.models import TrainingJob
from services.db.session import session_factory
from services.intake.records import create_job
from services.intake.request import TrainingRequest, parse_request
from services.jobs.driver import run_job
from services.store.storage import open_store
from tests.conftest import TINY
from training.hyperparams import Hyperparameters

pytestmark = pytest.mark.integration


def upload(s3_server, folder: Path, bucket: str, prefix: str) -> int:
    client, n = s3_server.client(), 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            client.put_object(
                Bucket=bucket, Key=f"{prefix}/{p.relative_to(folder)}", Body=p.read_bytes()
            )
            n += 1
    return n


def test_a_job_and_a_search_stream_an_s3_dataset_decoded_once(
    s3_server, settings_for, make_dataset, ray_cluster, tmp_path
):
    bucket = s3_server.bucket_name("scale")
    s3_server.client().create_bucket(Bucket=bucket)
    assert upload(s3_server, make_dataset(per_class=12, size=16), bucket, "datasets/shapes") == 36
    planted = "datasets/shapes/class_1/planted.png"  # listed as an image, not one
    s3_server.client().put_object(Bucket=bucket, Key=planted, Body=b"\x89PNG not really")
    settings = settings_for(
        f"sqlite:///{tmp_path / 'scale.db'}",
        store_url=f"s3://{bucket}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
        dataset_roots=f"s3://{bucket}/datasets",
        # this small set takes the large sets' path: 37 files at 32 px are 0.1 MB decoded,
        # over a decode budget of 0.05 MB (the product rule; the count rule is far off)
        decode_memory_mb=0.05,
    )
    uri = f"s3://{bucket}/datasets/shapes/"
    request = TrainingRequest(
        batch_id=f"scale-{uuid.uuid4().hex[:8]}",
        dataset_uri=uri,
        model_name="streamed",
        hyperparameters=Hyperparameters(**TINY, on_bad_image="skip"),
    )
    job, _ = create_job(settings, request)
    said: list[str] = []
    outcome = run_job(job.id, settings, say=said.append)
    assert outcome.status == "success", outcome.error
    assert any("over the 0.05 MB budget" in m and "streamed" in m for m in said), said
    assert any(m.startswith("decoded 37 files into 1 shard(s)") for m in said), said
    assert "skipped 1 unreadable image(s)" in said
    assert outcome.metrics["n"] == 4  # the test split, read from the shards
    downloads = settings.cache_dir / "datasets"  # where a copy of a small S3 set goes
    assert not downloads.exists() or not any(downloads.iterdir())
    store = open_store(settings)
    health = json.loads(store.get_bytes(f"reports/job-{job.id}/health.json"))
    [bad] = health["unreadable"]
    assert bad["path"] == "class_1/planted.png"  # relative to the prefix, as a folder's
    assert bad["reason"].startswith("UnidentifiedImageError")
    cached = store.list("cache/decoded")
    manifests = [k for k in cached if k.endswith("/manifest.json")]
    assert len(manifests) == 1 and manifests[0].endswith("-32/manifest.json")
    assert sum(k.endswith(".parquet") for k in cached) == 1

    tune = parse_request(
        {
            "batchId": f"scale-tune-{uuid.uuid4().hex[:8]}",
            "datasetUri": uri,
            "modelName": "streamed-tuned",
            "mode": "tune",
            "hyperparameters": {**TINY, "phase2_epochs": 0, "on_bad_image": "skip"},
            "tuning": {"grid": {"phase1_lr": [1e-3, 3e-3]}, "kFolds": 2},
        }
    )
    job2, _ = create_job(settings, tune, num_workers=1)
    said2: list[str] = []
    outcome2 = run_job(job2.id, settings, say=said2.append)
    assert outcome2.status == "success", outcome2.error
    assert any(m.startswith("decoded shards reused") for m in said2), said2
    assert not any(m.startswith("decoded 37") for m in said2)
    assert store.list("cache/decoded") == cached  # nothing decoded or written again
    assert not downloads.exists() or not any(downloads.iterdir())


def test_a_dataset_larger_than_the_object_store_trains(settings_for, make_dataset, tmp_path):
    """600 images at 224 px are 90 MB decoded; this cluster's object store holds 76 MiB."""
    from tests.raycluster import LocalRayCluster

    root = make_dataset(per_class=200, size=24)
    hp = {**TINY, "image_size": 224, "batch_size": 32, "phase2_epochs": 0}
    db = f"sqlite:///{tmp_path / 'big.db'}"
    settings = settings_for(db, stream_min_images=0)
    request = TrainingRequest(
        batch_id=f"big-{uuid.uuid4().hex[:8]}",
        dataset_uri=str(root),
        model_name="big",
        hyperparameters=Hyperparameters(**hp),
    )
    job, _ = create_job(settings, request)
    cluster = LocalRayCluster(num_cpus=2, extra_args=["--object-store-memory=80000000"])
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "COLECIONADOR_HOME": str(settings.home),
            "COLECIONADOR_DATABASE_URL": db,
            "COLECIONADOR_DATASET_ROOTS": str(tmp_path),
            "COLECIONADOR_STREAM_MIN_IMAGES": "0",
            "COLECIONADOR_PUBLISH_EVENTS": "false",
            "COLECIONADOR_RAY_ADDRESS": cluster.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(cluster.token_path),
        }
        run = subprocess.run(
            [sys.executable, "-m", "services.jobs", "--job-id", str(job.id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        cluster.stop()
    with session_factory(db)() as s:
        row = s.get(TrainingJob, job.id)
        assert row.status == "success", (row.error, run.stdout[-3000:], run.stderr[-3000:])
    assert "decoded 600 files into" in run.stdout
