"""A tune job's temperature is fitted on its k fold models' pooled out-of-fold predictions
(training/calibration.py fit_split, services/jobs/steps/evaluate.py): every train + val
image once, not the final model's few validation images; metrics.json says which and why."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from services.jobs.steps import PreparedData, evaluate
from tests.conftest import TINY
from training.calibration import calibration_report, fit_split, logits_of, softmax
from training.data import DecodedDataset, Split
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold
from training.model import build_model


def planted(n: int, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a perfectly calibrated model and labels drawn from its softmax."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = softmax(z)
    return z, np.array([rng.choice(k, p=row) for row in p])


def no_validation() -> tuple[np.ndarray, np.ndarray]:
    raise AssertionError("the validation split is not predicted when pooled ones are given")


def test_log_probabilities_are_logits_to_temperature_scaling():
    z, _ = planted(200)
    probs = softmax(z).astype(np.float32)  # as oof.npz keeps them
    for t in (0.3, 1.0, 4.0):
        assert np.allclose(softmax(logits_of(probs), t), softmax(z, t), atol=1e-5)
    floored = logits_of(np.array([[1.0, 0.0]], np.float32))  # a float32 rounded to 0
    assert np.isfinite(floored).all() and floored[0, 1] < -80


@pytest.mark.parametrize("scale", [3.0, 0.4])  # over-confident, under-confident
def test_planted_miscalibration_in_the_pooled_predictions_is_recovered(scale):
    z, y = planted(4000, seed=1)
    pooled = softmax(z * scale).astype(np.float32)
    split = fit_split(no_validation, pooled, y)
    assert split.name == "out_of_fold" and "k fold models" in split.why
    test_z, test_y = planted(2000, seed=2)
    report = calibration_report(split, test_z * scale, test_y)
    assert report["temperature"] == pytest.approx(scale, rel=0.1)
    assert report["fit_split"] == "out_of_fold" and report["validation_images"] == 4000
    assert report["fitted_on"] == "4000 out-of-fold train + val images"
    assert report["nll_after"] < report["nll_before"] and report["ece_after"] < 0.03


def test_the_fit_uses_every_pooled_row():
    """A validation split of 40 images the model gets all right cannot identify T (kept at
    1); the 4000 pooled rows, errors included, can: the fit reads all of them."""
    z, y = planted(4000, seed=3)
    logits = z * 3.0
    right = logits.argmax(1)
    val = fit_split(lambda: (logits[:40], right[:40]), None, None, "it stopped early")
    assert val.name == "validation" and "it stopped early" in val.why
    kept = calibration_report(val, logits, y)
    assert kept["temperature"] == 1.0 and kept["fitted"] is False
    pooled = calibration_report(fit_split(no_validation, softmax(logits), y), logits, y)
    assert pooled["validation_images"] == 4000 and pooled["temperature"] == pytest.approx(
        3, rel=0.1
    )
    # the first 40 rows alone (none wrong) would not fit it: so the rest were read
    assert (
        calibration_report(fit_split(no_validation, softmax(logits[:40]), right[:40]), logits, y)[
            "fitted"
        ]
        is False
    )


class Trained:
    """A TrainedModel's face: an untrained model and a model.pt."""

    def __init__(self) -> None:
        self.model = build_model("mobilenet_v3_small", 3)
        buf = io.BytesIO()
        torch.save({"temperature": 1.0}, buf)
        self.package = buf.getvalue()

    def module(self):
        return self.model


def _data() -> PreparedData:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    decoded = DecodedDataset(
        images=rng.integers(0, 255, (36, 3, 16, 16), dtype=np.uint8),
        labels=labels,
        classes=["a", "b", "c"],
        paths=[f"img_{i}.png" for i in range(36)],
    )
    test = np.array([5, 17, 29])
    rest = np.setdiff1d(np.arange(36), test)
    return PreparedData(decoded, Split(rest[::4], np.setdiff1d(rest, rest[::4]), test), {})


def test_evaluate_fits_a_tune_jobs_temperature_on_its_pooled_predictions():
    """model.pt's temperature, metrics and the report agree, fitted on the 33 pooled
    rows (planted over-confident: T > 1); a pool that does not fit falls back, saying why."""
    data, hp = _data(), Hyperparameters(**{**TINY, "image_size": 16, "export_onnx": False})
    pool = np.union1d(data.split.train, data.split.val)
    rng = np.random.default_rng(4)
    z = rng.normal(0, 1.0, (len(pool), 3))
    z[np.arange(len(pool)), data.decoded.labels[pool]] += 1.0  # right more often than not
    z *= 6.0  # and far too sure of it
    oof = OutOfFold("the search's fold models (test)", pool, softmax(z).astype(np.float32))
    trained = Trained()  # one model for the three (evaluate does not change it)
    out = evaluate(trained, data, hp, oof)  # type: ignore[arg-type]
    cal = out.calibration
    assert cal is not None and cal["fit_split"] == "out_of_fold"
    assert cal["validation_images"] == len(pool) == 33 and cal["temperature"] > 1.5
    package = torch.load(io.BytesIO(out.package or b""), weights_only=True)
    assert package["temperature"] == cal["temperature"] == out.metrics["temperature"]

    short = OutOfFold("s", pool[:-1], softmax(z[:-1]).astype(np.float32))
    cal = evaluate(trained, data, hp, short).calibration  # type: ignore[arg-type]
    assert cal is not None and cal["fit_split"] == "validation"
    assert cal["validation_images"] == len(data.split.val)
    assert "score 32 images, not this job's 33" in cal["fit_split_why"]
    cal = evaluate(trained, data, hp).calibration  # type: ignore[arg-type]
    assert cal is not None and "a train job" in cal["fit_split_why"]
