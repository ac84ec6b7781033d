"""training/predict.py: a served image is decoded exactly as training decodes the same file,
top-k ordering, the temperature from model.pt; and the serve command's predict flags."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from training.data import decode, discover
from training.evaluate import predict_probs
from training.predict import BadImage, Predictor, decode_image, top_k


def test_decode_matches_the_training_decode_of_the_same_file(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 255, (13, 9), dtype=np.uint8)  # grey, odd sizes
            Image.fromarray(pixels).save(tmp_path / c / f"{i}.png")
    decoded = decode(discover(tmp_path), 32)
    for path, expected in zip(decoded.paths, decoded.images):
        got = decode_image((tmp_path / path).read_bytes(), 32)
        assert got.dtype == np.uint8 and got.shape == (3, 32, 32)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("raw", [b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_unreadable_bytes_are_a_bad_image(raw):
    with pytest.raises(BadImage, match="not a readable image"):
        decode_image(raw, 32)


def test_top_k_best_first_and_k_clamped():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    assert top_k(probs, ["x", "y", "z"], 2) == [
        [{"label": "y", "probability": 0.7}, {"label": "z", "probability": 0.2}],
        [{"label": "x", "probability": 0.5}, {"label": "z", "probability": 0.3}],
    ]
    assert len(top_k(probs, ["x", "y", "z"], 99)[0]) == 3


def test_temperature_divides_the_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    images = np.random.default_rng(0).integers(0, 255, (5, 3, 4, 4), dtype=np.uint8)
    p1, p3 = predict_probs(model, images), predict_probs(model, images, temperature=3.0)
    assert (p1.argmax(1) == p3.argmax(1)).all()
    assert (p3.max(1) < p1.max(1)).all()
    logits = np.log(p1)  # up to a constant per row
    expected = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)
    np.testing.assert_allclose(p3, expected, atol=1e-5)


def test_predictor_takes_the_temperature_from_the_package():
    from training.hyperparams import Hyperparameters
    from training.model import build_model, export_model

    hp = Hyperparameters(backbone="mobilenet_v3_small", image_size=32)
    package = export_model(build_model(hp.backbone, 2), hp, ["cat", "dog"])
    buf = io.BytesIO()
    torch.save({**package, "temperature": 2.5}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    p = Predictor.from_package(loaded)
    assert (p.temperature, p.classes, p.image_size) == (2.5, ["cat", "dog"], 32)
    assert Predictor.from_package(package).temperature == 1.0
    out = p.predict(np.zeros((2, 3, 32, 32), np.uint8), k=1)
    assert len(out) == 2 and out[0][0]["label"] in ("cat", "dog")


def test_serve_predict_flags():
    from services.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--predict", "digits@2", "--predict", "cats", "--predict-max-replicas", "3"]
    )
    assert args.predict == [("digits", 2), ("cats", None)]
    assert (args.predict_min_replicas, args.predict_max_replicas, args.max_batch_size) == (1, 3, 16)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["serve", "--predict", "a@0"])
    assert e.value.code == 2


def test_a_replica_answers_503_until_production_is_set_then_follows_the_alias(tmp_path):
    """services.registry.serving.ModelServer outside Serve (its batch handler, ``answer``): no
    version yet is a 503 naming why; each refresh loads the version the alias points at,
    and every answer names the version that gave it."""
    import base64

    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from benchmarks.predict_latency import MODEL, make_model
    from services.api import create_app
    from services.db import repo
    from services.db.session import session_factory
    from services.registry import promotion
    from services.registry.serving import ModelServer
    from services.replica_settings import ReplicaSettings

    settings, _package, png = make_model(tmp_path, "mobilenet_v3_small", 32)
    with session_factory(settings.db_url)() as s:
        repo.set_promotion_mode(s, "other", "manual")
    empty = ModelServer(ReplicaSettings.of(settings), "other", reload_s=3600)
    (answer,) = empty.answer([([png], 5)])
    assert answer["status"] == 503 and "no version of other behind 'production'" in answer["error"]

    server = ModelServer(ReplicaSettings.of(settings), MODEL, reload_s=3600)
    answer, bad = server.answer([([png, png], 2), ([png, b"junk"], 5)])
    assert answer["version"] == 1 and len(answer["predictions"]) == 2
    assert len(answer["predictions"][0]) == 2
    assert bad["status"] == 422 and bad["error"].startswith("images[1]: ")
    with session_factory(settings.db_url)() as s:  # v1 again as v2, then production -> v2
        mv = repo.get_version(s, MODEL, 1)
        job, _ = repo.create_job(
            s, batch_id="v2", dataset_uri="x", model_name=MODEL, hyperparameters={}
        )
        v2 = repo.reserve_version(
            s,
            MODEL,
            job_id=job.id,
            **{k: getattr(mv, k) for k in ("accuracy", "precision", "recall", "f1", "gate")},
            status="approved",
            model_path=mv.model_path,
        )
        from services.store.storage import open_store

        store = open_store(settings)
        store.put_bytes(
            f"models/{MODEL}/v2/model.pt", store.get_bytes(f"models/{MODEL}/v1/model.pt")
        )
        promotion.auto_promote(s, settings, MODEL, v2.version, job.id)
        s.commit()
    assert server.refresh() == 2
    assert server.answer([([png], 1)])[0]["version"] == 2
    assert server.status()["version"] == 2 and server.status()["error"] is None

    # the API without a Serve cluster: the model is not served
    client = TestClient(create_app(settings.model_copy(update={"api_token": SecretStr("t")})))
    r = client.post(f"/models/{MODEL}/predict", json={"image": base64.b64encode(png).decode()})
    assert r.status_code == 404 and "not served" in r.json()["detail"]
    r = client.post(
        f"/models/{MODEL}/predict", content=b"x", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415


def test_the_predict_application_takes_replicas_autoscaling_and_batching():
    from services.api.deployment import autoscaling
    from services.config import Settings
    from services.registry.serving import predict_application

    settings = Settings(database_url="sqlite://")
    fixed = predict_application(settings, "m", num_replicas=3, max_batch_size=40)
    cfg = fixed._bound_deployment._deployment_config
    assert cfg.num_replicas == 3 and cfg.max_ongoing_requests == 40  # a whole batch fits
    args = fixed._bound_deployment.init_args
    assert args[1:5] == ("m", "production", None, 2.0) and args[5] == 40
    auto = predict_application(
        settings, "m", version=2, autoscaling_config=autoscaling(0, 5, target_ongoing_requests=8)
    )._bound_deployment
    assert auto._deployment_config.autoscaling_config.max_replicas == 5
    assert auto._deployment_config.autoscaling_config.min_replicas == 0
    assert auto.init_args[3] == 2  # pinned
