"""Calibration (training/calibration.py): ECE on planted data, temperature scaling that
repairs a model made over- or under-confident, and the temperature on every predict path
(predict_probs, model.onnx) and in the gate."""

import numpy as np
import pytest
import torch
from torch import nn

from training.calibration import (
    FitSplit,
    calibration_report,
    ece_interval,
    expected_calibration_error,
    fit,
    fit_temperature,
    reliability_bins,
    softmax,
)
from training.evaluate import predict_logits, predict_probs, quality_gate
from training.export import export_with_parity, onnx_probs
from training.hyperparams import Hyperparameters
from training.plots import reliability_png


def planted(n: int, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a perfectly calibrated model and labels drawn from its softmax."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = softmax(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return z, labels


def test_ece_by_hand():
    # two bins used: 0.9 (2 images, 1 right) and 0.6 (2 images, both right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    # bin (0.867, 0.933]: acc 0.5, conf 0.9 -> 0.4; bin (0.533, 0.6]: acc 1, conf 0.6 -> 0.4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0)) == 0.0


def test_a_calibrated_model_has_a_small_ece_and_t_near_one():
    z, y = planted(6000)
    assert expected_calibration_error(softmax(z), y) < 0.03
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.08)


@pytest.mark.parametrize("scale", [3.0, 0.4])  # over-confident, under-confident
def test_temperature_scaling_repairs_a_miscalibrated_model(scale):
    z, y = planted(8000, seed=1)
    logits = z * scale  # the same ranking, wrong confidence
    val, test = slice(0, 4000), slice(4000, None)
    report = calibration_report(FitSplit.validation(logits[val], y[val]), logits[test], y[test])
    assert report["temperature"] == pytest.approx(scale, rel=0.1)  # T undoes the scale
    assert report["ece_before"] > 0.08
    assert report["ece_after"] < 0.03 and report["ece_after"] < report["ece_before"] / 3
    assert report["nll_after"] < report["nll_before"]
    # accuracy is untouched: the argmax does not move
    assert (softmax(logits[test], report["temperature"]).argmax(1) == logits[test].argmax(1)).all()
    png = reliability_png(report, "planted")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_split_the_model_gets_all_right_keeps_t_at_one_and_says_why():
    z, y = planted(400, seed=2)
    right = z.argmax(1)  # every top-1 label right: the plain NLL fit runs to T -> 0
    fitted = fit(z, right)
    assert (fitted.temperature, fitted.fitted) == (1.0, False)
    assert "0 error(s) in 400 images" in fitted.reason
    two = right.copy()
    two[:2] = (two[:2] + 1) % 5  # two errors: still too few
    assert fit(z, two).temperature == 1.0 and "2 error(s)" in fit(z, two).reason
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0)) == 1.0
    report = calibration_report(FitSplit.validation(z, right), z, right)
    assert report["fitted"] is False and report["kept_because"] == fitted.reason
    assert report["nll_after"] == report["nll_before"]  # never worse: nothing was done


def test_calibration_never_hurts_on_held_out_data_of_every_kind():
    """Calibrated test NLL is never worse than uncalibrated by more than noise, for
    planted models from under- to over-confident and splits from all right to noisy."""
    for seed, scale in enumerate([0.3, 0.7, 1.0, 1.5, 4.0, 12.0]):
        z, y = planted(600, seed=10 + seed)
        logits = z * scale
        report = calibration_report(
            FitSplit.validation(logits[:300], y[:300]), logits[300:], y[300:]
        )
        assert report["nll_after"] <= report["nll_before"] + 0.02, (scale, report)
        lo, hi = report["ece_after_interval"]
        assert 0 <= lo < hi <= 1


def test_the_ece_interval_is_wide_for_few_images_and_narrow_for_many():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    exact = expected_calibration_error(probs, labels)
    assert ece_interval(probs[[0, 0]], labels[[0, 0]]) == [pytest.approx(0.1)] * 2
    assert ece_interval(probs, labels, n_boot=2000)[1] >= exact  # the by-hand example's
    z, y = planted(6000, seed=3)
    few = ece_interval(softmax(z[:90]), y[:90])
    many = ece_interval(softmax(z), y, n_boot=200)
    assert few[1] - few[0] > 3 * (many[1] - many[0])


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()  # fmt: skip


def images(n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def test_predict_probs_applies_the_temperature():
    model, x = tiny_model(), images()
    logits = predict_logits(model, x)
    assert predict_probs(model, x) == pytest.approx(softmax(logits), abs=1e-6)
    assert predict_probs(model, x, temperature=2.5) == pytest.approx(softmax(logits, 2.5), abs=1e-6)


def test_onnx_applies_the_temperature_and_parity_stays_honest():
    model, x = tiny_model(), images()
    result = export_with_parity(model, 16, x, temperature=0.25)
    assert result.passed and result.report["temperature"] == 0.25
    assert result.report["output_is"] == "logits / temperature"
    from training.export import _normalised

    got = onnx_probs(result.model, _normalised(x).numpy())
    assert got == pytest.approx(predict_probs(model, x, temperature=0.25), abs=1e-5)
    assert not np.allclose(got, predict_probs(model, x), atol=1e-3)  # T made a difference


def test_gate_ece_rule():
    metrics = {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "ece": 0.04}
    assert [r.metric for r in quality_gate(metrics, Hyperparameters()).rules] == [
        "accuracy",
        "precision",
        "recall",
    ]
    passed = quality_gate(metrics, Hyperparameters(gate_ece=0.05))
    rule = passed.rules[-1]
    assert (rule.metric, rule.op, rule.value, rule.passed) == ("ece", "<", 0.04, True)
    assert passed.approved and passed.to_dict()["rules"][-1]["op"] == "<"
    assert not quality_gate(metrics, Hyperparameters(gate_ece=0.03)).approved
    assert not quality_gate({**metrics, "ece": None}, Hyperparameters(gate_ece=0.5)).approved
