"""Drift between batches (training/drift.py): a planted class shift, new and missing
classes, and batch images that leak from the previous version's test split."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from training.drift import class_shift, compare, data_profile, image_hashes


def smooth_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, 3, size, size) photos-like images: random 8x8 fields, upscaled smoothly."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.uint8)
    for k in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        big = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        out[k] = np.asarray(big).transpose(2, 0, 1)
    return out


def sha(img: np.ndarray) -> str:
    return hashlib.sha1(img.tobytes()).hexdigest()


def test_the_same_mix_is_no_shift():
    s = class_shift({"a": 100, "b": 50}, {"a": 200, "b": 100})
    assert s["total_variation"] == pytest.approx(0.0)
    assert s["chi_square"]["p_value"] == pytest.approx(1.0)
    assert s["new_classes"] == s["missing_classes"] == []


def test_a_shifted_batch():
    # previous 50/50, new 80/20: TV = 0.3; chi-square by hand on [[100, 100], [160, 40]]
    s = class_shift({"a": 100, "b": 100}, {"a": 160, "b": 40})
    assert s["total_variation"] == pytest.approx(0.3)
    expected = np.array([[130, 70], [130, 70]])
    observed = np.array([[100, 100], [160, 40]])
    chi = ((observed - expected) ** 2 / expected).sum()
    assert s["chi_square"]["statistic"] == pytest.approx(chi) and s["chi_square"]["dof"] == 1
    assert s["chi_square"]["p_value"] < 1e-6


def test_new_and_missing_classes():
    s = class_shift({"a": 10, "b": 10, "c": 10}, {"a": 10, "b": 10, "d": 30})
    assert s["new_classes"] == ["d"] and s["missing_classes"] == ["c"]
    # shares (1/3, 1/3, 1/3, 0) against (0.2, 0.2, 0, 0.6)
    assert s["total_variation"] == pytest.approx(0.5 * (2 * (1 / 3 - 0.2) + 1 / 3 + 0.6))


def test_leakage_from_the_previous_test_split_and_the_findings():
    old = smooth_images(30, seed=1)
    classes = ["a", "b"]
    labels = np.array([0, 1] * 15)
    test = np.arange(20, 30)  # the previous version's test split
    paths = [f"old/{i}.png" for i in range(30)]
    profile = data_profile(
        classes, labels, test, paths, [sha(x) for x in old], image_hashes(old[test])
    )
    assert profile["per_class"] == {"a": 15, "b": 15} and len(profile["test"]) == 10
    assert len(profile["test"][0]["phash"]) == 16

    fresh = smooth_images(20, seed=2)
    batch = np.concatenate(
        [
            fresh,
            old[[21]],  # the same bytes as a previous test image
            np.clip(old[[24]].astype(int) + 12, 0, 255).astype(np.uint8),  # brightened copy
            old[[3]],  # a previous *training* image: no leakage across versions
        ]
    )
    new_paths = [f"new/{i}.png" for i in range(len(batch))]
    new_classes = ["a"] * 20 + ["b", "a", "a"]
    report = compare(
        profile,
        {"a": 21, "b": 1, "c": 1},  # a shifted mix and a new class
        new_paths,
        new_classes,
        [sha(x) for x in batch],
        image_hashes(batch),
    )
    leaked = {(x["path"], x["previous_test_path"], x["how"]) for x in report["leakage"]}
    assert ("new/20.png", "old/21.png", "same bytes") in leaked
    assert any(p == "new/21.png" and q == "old/24.png" for p, q, _ in leaked)
    assert {p for p, _, _ in leaked} == {"new/20.png", "new/21.png"}  # fresh ones and a
    # previous training image (new/22.png) are no leak across versions
    assert report["leakage_count"] == 2
    kinds = {f["kind"] for f in report["findings"]}
    assert kinds == {"class_shift", "new_classes", "version_leakage"}
    assert report["new_classes"] == ["c"] and report["total_variation"] > 0.3


def test_no_drift_no_findings():
    imgs = smooth_images(10, seed=3)
    profile = data_profile(
        ["a"], np.zeros(10, int), np.arange(5), [str(i) for i in range(10)],
        [sha(x) for x in imgs], image_hashes(imgs[:5]),
    )  # fmt: skip
    fresh = smooth_images(10, seed=4)
    report = compare(
        profile, {"a": 10}, [f"n{i}" for i in range(10)], ["a"] * 10,
        [sha(x) for x in fresh], image_hashes(fresh),
    )  # fmt: skip
    assert report["findings"] == [] and report["leakage"] == []
