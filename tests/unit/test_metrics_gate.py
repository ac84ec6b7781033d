import numpy as np
import pytest

from training.evaluate import quality_gate
from training.hyperparams import Hyperparameters
from training.metrics import classification_metrics


def one_hot(pred, k):
    p = np.full((len(pred), k), 0.01)
    p[np.arange(len(pred)), pred] = 0.98
    return p


def test_metrics_against_a_hand_computation():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    m = classification_metrics(y, one_hot(pred, 3), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: a 2/3, b 2/3, c 0 (no predictions); recall: a 2/3, b 1, c 0
    assert m["precision"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    f_a, f_b = 2 / 3, 2 * (2 / 3) / (2 / 3 + 1)
    assert m["f1"] == pytest.approx((f_a + f_b) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(f_b),
        "support": 2,
    }
    assert 0 <= m["roc_auc"] <= 1


def test_perfect_predictions_and_absent_class_auc():
    y = np.array([0, 1, 1, 0])
    m = classification_metrics(y, one_hot(y, 2), ["a", "b"])
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["roc_auc"]) == (1, 1, 1, 1, 1)
    m3 = classification_metrics(y, one_hot(y, 3), ["a", "b", "c"])
    assert m3["roc_auc"] is None


def test_gate_is_strictly_greater_and_records_every_rule():
    hp = Hyperparameters()
    g = quality_gate({"accuracy": 0.95, "precision": 0.90, "recall": 0.88}, hp)
    assert g.status == "rejected" and g.passed() == {
        "accuracy": True,
        "precision": True,
        "recall": False,
    }
    d = g.to_dict()
    assert d["status"] == "rejected" and len(d["rules"]) == 3
    assert d["rules"][2] == {"metric": "recall", "threshold": 0.88, "value": 0.88, "passed": False}
    assert quality_gate({"accuracy": 0.91, "precision": 0.89, "recall": 0.881}, hp).approved
    low = Hyperparameters(gate_accuracy=0.5, gate_precision=0.5, gate_recall=0.5)
    assert quality_gate({"accuracy": 0.6, "precision": 0.6, "recall": 0.6}, low).approved


def test_the_onnx_parity_rule_only_when_asked_for():
    good = {"accuracy": 0.99, "precision": 0.99, "recall": 0.99}
    same = {
        "opset": 20,
        "max_abs_diff": 2e-7,
        "top1_agreement": 1.0,
        "tolerance": 1e-4,
        "passed": True,
    }
    assert list(quality_gate(good, Hyperparameters(), same).passed()) == [
        "accuracy",
        "precision",
        "recall",
    ]  # not asked for: no rule, whatever the export
    assert quality_gate(good, Hyperparameters(), {"passed": False}).approved

    hp = Hyperparameters(gate_onnx_parity=True)
    g = quality_gate(good, hp, same)
    assert g.approved and g.to_dict()["rules"][3] == {
        "metric": "onnx_parity",
        "threshold": 1e-4,
        "value": 2e-7,
        "passed": True,
    }
    off = quality_gate(
        good, hp, {**same, "max_abs_diff": 0.3, "top1_agreement": 0.9, "passed": False}
    )
    assert off.status == "rejected" and off.passed()["onnx_parity"] is False
    for missing in (None, {"passed": False, "error": "export failed: ..."}):
        g = quality_gate(good, hp, missing)  # no model.onnx: rejected, the worst difference
        assert g.status == "rejected" and g.rules[3].value == 1.0
