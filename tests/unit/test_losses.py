import math

import numpy as np
import pytest
import torch

from training.hyperparams import Hyperparameters
from training.losses import FocalLoss, balanced_weights, build_loss

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TARGET = torch.tensor([0, 2])


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_cross_entropy_with_label_smoothing_by_hand():
    eps, k = 0.1, 3
    expected = 0.0
    for row, t in zip(LOGITS.tolist(), TARGET.tolist()):
        logp = [math.log(p) for p in softmax(row)]
        expected += -((1 - eps) * logp[t] + eps / k * sum(logp))
    loss = build_loss(Hyperparameters(label_smoothing=eps), np.array([0, 1, 2]), 3)
    assert loss(LOGITS, TARGET).item() == pytest.approx(expected / 2, rel=1e-6)


def test_focal_by_hand():
    g = 2.0
    expected = 0.0
    for row, t in zip(LOGITS.tolist(), TARGET.tolist()):
        p = softmax(row)[t]
        expected += -((1 - p) ** g) * math.log(p)
    assert FocalLoss(g)(LOGITS, TARGET).item() == pytest.approx(expected / 2, rel=1e-6)
    # gamma 0 is plain cross-entropy
    ce = torch.nn.functional.cross_entropy(LOGITS, TARGET)
    assert FocalLoss(0.0)(LOGITS, TARGET).item() == pytest.approx(ce.item(), rel=1e-6)


def test_balanced_class_weights():
    w = balanced_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    loss = build_loss(Hyperparameters(class_weights="balanced"), np.array([0, 0, 0, 1]), 2)
    assert loss.weight.tolist() == pytest.approx(w.tolist())


def my_loss(logits, target):
    return logits.sum() * 0 + 42.0


def test_custom_loss_by_import_path():
    loss = build_loss(Hyperparameters(loss="tests.unit.test_losses:my_loss"), np.array([0, 1]), 2)
    assert loss(LOGITS, TARGET).item() == 42.0
    with pytest.raises(ValueError, match="cannot import"):
        build_loss(Hyperparameters(loss="nowhere.at_all:fn"), np.array([0, 1]), 2)
