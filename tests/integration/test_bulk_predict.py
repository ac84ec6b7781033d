"""Bulk predictions (mode predict) on the session's Ray cluster, PostgreSQL, the S3 server
and RabbitMQ: a tiny model trained by a real job, then its predictions for a folder with a
corrupt image and for an S3 prefix, read back with pyarrow; the PredictionsReady event on
the events queue; a reference that names no version fails the job, saying so; with
label_next, to_label.csv and to_label.png beside the predictions."""

from __future__ import annotations

import io

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.intake.admission import admit
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs.driver import run_job
from services.store.storage import open_store
from tests.amqp import next_message
from tests.conftest import AMQP_URL, SESSION, TINY, write_dataset
from training.hyperparams import Hyperparameters
from training.predict import Predictor, decode_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(pg_url, ray_cluster, s3_server, tmp_path_factory):
    """Settings on the S3 store and version 1 (production) of a tiny model."""
    home = tmp_path_factory.mktemp("bulk-home")
    images = s3_server.bucket_name("bulk-in")  # a bucket of images to predict, a root
    settings = Settings(
        home=home,
        database_url=pg_url,
        broker_url=AMQP_URL,
        workers=2,
        publish_events=False,
        store_url=f"s3://{s3_server.bucket_name('bulk')}/colecionador",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=SecretStr(s3_server.secret_key),
        dataset_roots=f"{home},s3://{images}",
    )
    data = write_dataset(home / "train", classes=3, per_class=12, size=16)
    model = f"bulk-{SESSION}"
    job, _ = create_job(
        settings,
        TrainingRequest(
            batch_id=f"bulk-train-{SESSION}",
            dataset_uri=str(data),
            model_name=model,
            hyperparameters=Hyperparameters(**TINY),
        ),
    )
    outcome = run_job(job.id, settings, say=lambda _m: None)
    assert outcome.status == "success" and outcome.version == 1, outcome.error
    return settings, model, home, images


def _predict(settings: Settings, batch: str, **fields):
    request = admit({"batch_id": f"{batch}-{SESSION}", "mode": "predict", **fields}, settings)
    assert isinstance(request, TrainingRequest), request
    job, created = create_job(settings, request)
    assert created and job.mode == "predict"
    return job, run_job(job.id, settings, say=lambda _m: None)


def test_a_folder_with_a_corrupt_image_gives_every_row_and_the_event(trained, events_queue):
    settings, model, home, _ = trained
    settings = settings.model_copy(update={"publish_events": True, "events_queue": events_queue})
    folder = write_dataset(home / "lote", classes=2, per_class=5, size=16, corrupt=1, seed=3)
    out = home / "out" / "lote"
    job, outcome = _predict(
        settings, "bulk-folder", dataset_uri=str(folder), model=model, out_uri=str(out), top_k=2
    )
    assert outcome.status == "success", outcome.error
    store = open_store(settings)
    table = pq.read_table(
        io.BytesIO(store.get_bytes(f"predictions/job-{job.id}/predictions.parquet"))
    )
    assert table.num_rows == 11
    rows = {r["path"]: r for r in table.to_pylist()}
    broken = rows.pop("class_0/broken_0.png")
    assert (
        broken["error"] == "not a readable image (UnidentifiedImageError)"
        and broken["labels"] == []
    )
    classes = {"class_0", "class_1", "class_2"}
    for r in rows.values():
        assert r["error"] is None and len(r["labels"]) == 2 and set(r["labels"]) <= classes
        assert (r["model_name"], r["version"]) == (model, 1)
    assert {r["version"] for r in table.to_pylist()} == {1}
    # the predict app's answer for one of them (model.pt's decode, temperature and top-k)
    import torch

    package = torch.load(
        io.BytesIO(store.get_bytes(f"models/{model}/v1/model.pt")), weights_only=True
    )
    app = Predictor.from_package(package).predict(
        decode_image((folder / "class_1/000.png").read_bytes(), 32)[None], k=2
    )[0]
    assert rows["class_1/000.png"]["labels"] == [p["label"] for p in app]
    assert rows["class_1/000.png"]["probabilities"] == pytest.approx(
        [p["probability"] for p in app], abs=1e-6
    )
    copy = pq.read_table(out / "predictions.parquet")  # the copy where the request asked
    assert copy.num_rows == 11
    flat = pacsv.read_csv(out / "predictions.csv")
    assert flat.num_rows == 11 and {"label_1", "probability_2", "version"} <= set(flat.column_names)

    with session_factory(settings.db_url)() as s:
        row = repo.get_job(s, job.id)
        assert (row.status, row.total_images, row.model_name) == ("success", 11, model)
        kinds = [e.kind for e in repo.job_events(s, job.id)]
    assert kinds == ["PredictionsReady"]
    event, _ = next_message(events_queue)
    assert event["job_id"] == job.id and (event["rows"], event["bad_rows"]) == (11, 1)
    assert (event["model_name"], event["version"]) == (model, 1)
    assert event["output_uri"] == (out / "predictions.parquet").resolve().as_uri()


def test_an_s3_prefix_is_read_in_place_and_a_missing_model_fails_the_job(trained, s3_server):
    settings, model, home, bucket = trained
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    images = write_dataset(home / "s3-lote", classes=2, per_class=3, size=16, seed=5)
    for p in sorted(images.rglob("*.png")):
        client.upload_file(str(p), bucket, f"lote/{p.relative_to(images).as_posix()}")
    client.put_object(Bucket=bucket, Key="lote/readme.txt", Body=b"not an image")

    job, outcome = _predict(
        settings, "bulk-s3", dataset_uri=f"s3://{bucket}/lote/", model=f"{model}@v1"
    )
    assert outcome.status == "success", outcome.error
    key = f"predictions/job-{job.id}/predictions.parquet"
    table = pq.read_table(io.BytesIO(open_store(settings).get_bytes(key)))
    assert table.num_rows == 6 and table.column("error").null_count == 6
    assert sorted(table.column("path").to_pylist())[0] == "class_0/000.png"

    job, outcome = _predict(
        settings, "bulk-none", dataset_uri=f"s3://{bucket}/lote/", model=f"{model}@v7"
    )
    assert outcome.status == "failed"
    assert outcome.error == f"model: model '{model}' has no version 7"


def test_label_next_ranks_the_pool_beside_the_predictions(trained):
    settings, model, home, _ = trained
    folder = write_dataset(home / "pool", classes=3, per_class=6, size=16, corrupt=1, seed=11)
    job, outcome = _predict(
        settings, "bulk-label-next", dataset_uri=str(folder), model=model, top_k=2, label_next=5
    )
    assert outcome.status == "success", outcome.error
    store = open_store(settings)
    prefix = f"predictions/job-{job.id}/"
    table = pq.read_table(io.BytesIO(store.get_bytes(prefix + "predictions.parquet")))
    assert table.num_rows == 19 and "embedding" not in table.column_names
    good = [r for r in table.to_pylist() if r["error"] is None]
    margin = {r["path"]: r["probabilities"][0] - r["probabilities"][1] for r in good}
    picks = pacsv.read_csv(io.BytesIO(store.get_bytes(prefix + "to_label.csv"))).to_pylist()
    assert [p["rank"] for p in picks] == [1, 2, 3, 4, 5]
    assert len({p["path"] for p in picks}) == 5  # and each one readable:
    for p in picks:
        assert p["margin"] == pytest.approx(margin[p["path"]], abs=1e-5)
        assert p["label_1"] == next(r["label"] for r in good if r["path"] == p["path"])
    assert picks[0]["margin"] == pytest.approx(min(margin.values()), abs=1e-5)
    ten_least = sorted(margin.values())[9]  # every pick among the 2N most uncertain
    assert all(p["margin"] <= ten_least + 1e-5 for p in picks)
    assert store.get_bytes(prefix + "to_label.png")[:8] == b"\x89PNG\r\n\x1a\n"
    lines = outcome.lines()
    assert "what to label next: 5 images (rank, margin, predicted label)" in lines
    assert any(line.strip().startswith("1 ") and picks[0]["path"] in line for line in lines)
    assert outcome.artifacts["to_label.csv"].endswith(prefix + "to_label.csv")
