"""Label issues (training/label_issues.py): cleanlab must find labels planted as flipped."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from training.label_issues import (
    backbone_features,
    find_issues,
    label_issues_png,
    out_of_fold_probs,
)
from training.model import build_model


def flipped_digits(n: int, frac: float, seed: int = 0):
    """scikit-learn's digits (raw 64 pixels as features) with ``frac`` of the labels moved
    to another class at random; returns features, noisy labels and the flipped indices."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:n].astype(np.float32), y[:n]
    rng = np.random.default_rng(seed)
    flipped = rng.choice(n, int(frac * n), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return x, noisy, set(flipped.tolist())


def test_cleanlab_finds_the_flipped_labels():
    x, noisy, flipped = flipped_digits(1797, 0.05)
    probs = out_of_fold_probs(x, noisy, k=5)
    assert probs.shape == (1797, 10) and np.allclose(probs.sum(1), 1)
    report = find_issues(
        noisy,
        probs,
        [f"img{i}.png" for i in range(1797)],
        [str(c) for c in range(10)],
        source="planted",
        limit=1797,
    )
    found = {i["index"] for i in report["issues"]}
    precision = len(found & flipped) / len(found)
    recall = len(found & flipped) / len(flipped)
    # measured (seeds 0, 1, 2): 89 flipped; precision 0.70 / 0.78 / 0.74, recall 0.82 / 0.87 /
    # 0.85; the other issues found are mostly hard, honestly labelled digits
    assert recall >= 0.75 and precision >= 0.65, (precision, recall)
    top = report["issues"][: len(flipped) // 2]  # the top of the ranking: nearly all planted
    assert sum(i["index"] in flipped for i in top) / len(top) >= 0.9
    first = report["issues"][0]
    assert first["rank"] == 1 and first["path"] == f"img{first['index']}.png"
    assert first["given_label"] == str(noisy[first["index"]]) != first["likely_label"]
    probs_given = [i["given_label_prob"] for i in report["issues"]]
    assert probs_given == sorted(probs_given)  # ranked by self-confidence, lowest first
    assert report["issues_found"] == len(found) and report["images_checked"] == 1797
    images = np.zeros((1797, 3, 8, 8), np.uint8)
    assert label_issues_png(report, images)[:8] == b"\x89PNG\r\n\x1a\n"
    assert label_issues_png({**report, "issues": []}, images) is None


def test_clean_labels_give_few_issues():
    x, y, _ = flipped_digits(1000, 0.0)
    report = find_issues(
        y, out_of_fold_probs(x, y), [str(i) for i in range(1000)], list("0123456789"), source="x"
    )
    assert report["issues_found"] <= 25  # a few digits really are ambiguous


def test_a_class_too_small_for_two_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        out_of_fold_probs(np.zeros((5, 3)), np.array([0, 0, 0, 0, 1]))


def test_frozen_backbone_features_drop_the_head():
    model = build_model("mobilenet_v2", 3)
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    feats = backbone_features(model, images)
    assert feats.shape == (4, 1280)  # mobilenet_v2's pooled features, not 3 logits
    assert model.classifier[1].out_features == 3  # the model itself keeps its head
