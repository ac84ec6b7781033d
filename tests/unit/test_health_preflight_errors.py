"""Know your data, overfit one batch, and learn from the errors: each on data made to
contain the problem, which must be found."""

import shutil

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tests.unit.test_loop import HP, tiny_data
from training import data as datasets
from training.data import Split
from training.errors import error_report, worst_examples_png
from training.health import failing, health_report
from training.hyperparams import Hyperparameters
from training.preflight import lr_range_test, overfit_one_batch


def index_of(d, path):
    return d.paths.index(path)


def test_a_duplicate_across_the_split_is_leakage(make_dataset):
    root = make_dataset(per_class=12, size=32)
    shutil.copy(root / "class_1" / "003.png", root / "class_1" / "copy_of_003.png")
    img = Image.open(root / "class_2" / "005.png")
    ImageEnhance.Brightness(img).enhance(1.05).save(root / "class_2" / "brighter_005.png")
    d = datasets.decode(datasets.discover(root), 32)
    a, b = index_of(d, "class_1/003.png"), index_of(d, "class_1/copy_of_003.png")
    rest = [i for i in range(len(d)) if i not in (a, b)]
    split = Split(np.array(sorted(rest[:-4] + [a])), np.array(rest[-4:]), np.array([b]))
    r = health_report(d, split, min_per_class=5)
    kinds = {f["kind"] for f in r["findings"]}
    assert {"duplicates", "near_duplicates", "leakage"} <= kinds
    assert [x["path"] for x in r["exact_duplicates"][0]] == [
        "class_1/003.png",
        "class_1/copy_of_003.png",
    ]
    assert {"a": "class_2/005.png", "b": "class_2/brighter_005.png"} == {
        k: v for k, v in r["near_duplicates"][0].items() if k in "ab"
    }
    leak = r["leakage"][0]
    assert {(x["path"], x["split"]) for x in leak} == {
        ("class_1/003.png", "train"),
        ("class_1/copy_of_003.png", "test"),
    }
    assert failing(r, ["leakage"]) and not failing(r, ["imbalance"])


def test_corrupt_file_tiny_class_imbalance_sizes_and_modes(make_dataset):
    root = make_dataset(per_class=[40, 12, 3], size=16, corrupt=1)
    Image.new("RGB", (24, 20), "red").save(root / "class_1" / "colour.png")
    d = datasets.decode(datasets.discover(root), 16, "skip")
    r = health_report(d, None, min_per_class=5, max_imbalance=10)
    kinds = {f["kind"]: f for f in r["findings"]}
    assert kinds["unreadable"]["count"] == 1
    assert r["unreadable"][0]["path"] == "class_0/broken_0.png"
    assert r["small_classes"] == {"class_2": 3} and kinds["small_class"]["count"] == 1
    assert r["imbalance_ratio"] == pytest.approx(40 / 3) and "imbalance" in kinds
    assert r["per_class"] == {"class_0": 40, "class_1": 13, "class_2": 3}
    assert r["sizes"]["width"] == {"min": 16, "median": 16.0, "max": 24}
    assert r["modes"] == {"L": 55, "RGB": 1}


def test_clean_data_has_no_findings(make_dataset):
    d = datasets.decode(datasets.discover(make_dataset(per_class=12, size=32, seed=3)), 32)
    assert (
        health_report(d, datasets.split(d.labels), min_per_class=5, near_distance=0)["findings"]
        == []
    )


def test_overfit_one_batch_passes_and_fails_loudly():
    data = tiny_data()
    ok = overfit_one_batch(Hyperparameters(**HP), data, steps=150)
    assert ok["passed"] and ok["final_loss"] < 0.05 and ok["steps"] <= 150
    assert ok["final_loss"] < ok["initial_loss"] / 10
    stuck = overfit_one_batch(Hyperparameters(**HP), data, steps=20, lr=1e-9)
    assert not stuck["passed"] and "never fell under 0.05 in 20 steps" in stuck["message"]


def test_lr_range_test_suggests_an_lr_and_draws_the_curve():
    r = lr_range_test(Hyperparameters(**HP), tiny_data(), num_iter=40, end_lr=1.0)
    assert 1e-7 <= r["suggested_lr"] <= 1.0
    assert r["lrs"] == sorted(r["lrs"]) and len(r["lrs"]) == len(r["losses"]) <= 40
    assert r["png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_error_report_finds_the_mislabelled_images_first():
    """A label-noise batch: the model is sure of what it sees, the labels are wrong."""
    rng = np.random.default_rng(0)
    visual = rng.integers(0, 3, 60)
    labels = visual.copy()
    noisy = np.array([3, 17, 42])
    labels[noisy] = (visual[noisy] + 1) % 3
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), visual] = 0.9
    probs[5] = [0.4, 0.3, 0.3]  # an honest mistake, not confident
    labels[5] = 1
    paths = [f"img_{i}.png" for i in range(60)]
    r = error_report(labels, probs, ["a", "b", "c"], paths, top_k=4)
    assert r["errors"] == 4
    assert [w["path"] for w in r["worst"][:3]] == ["img_3.png", "img_17.png", "img_42.png"]
    assert r["worst"][3]["path"] == "img_5.png" and r["worst"][3]["confidence"] == 0.4
    pairs = {(p["true"], p["predicted"]): p["count"] for p in r["confused_pairs"]}
    assert sum(pairs.values()) == 4
    images = rng.integers(0, 255, (60, 3, 8, 8), dtype=np.uint8)
    assert worst_examples_png(r, images)[:4] == b"\x89PNG"
    clean = probs.copy()
    clean[5] = [0.05, 0.05, 0.9] if visual[5] == 2 else clean[5]
    no_errors = error_report(clean.argmax(1), clean, ["a", "b", "c"], paths)
    assert no_errors["errors"] == 0 and worst_examples_png(no_errors, images) is None


def test_the_same_picture_under_two_classes_is_a_label_conflict(make_dataset):
    root = make_dataset(per_class=12, size=32)
    shutil.copy(root / "class_0" / "004.png", root / "class_1" / "same_as_0_004.png")
    img = Image.open(root / "class_0" / "007.png")
    ImageEnhance.Brightness(img).enhance(1.1).save(root / "class_2" / "brighter_0_007.png")
    d = datasets.decode(datasets.discover(root), 32)
    r = health_report(d, None, min_per_class=5, max_imbalance=2)
    conflicts = {(c["a"], c["a_class"], c["b"], c["b_class"]) for c in r["label_conflicts"]}
    assert conflicts == {
        ("class_0/004.png", "class_0", "class_1/same_as_0_004.png", "class_1"),
        ("class_0/007.png", "class_0", "class_2/brighter_0_007.png", "class_2"),
    }
    how = {c["b"]: c["how"] for c in r["label_conflicts"]}
    assert how["class_1/same_as_0_004.png"] == "same bytes"
    assert how["class_2/brighter_0_007.png"].startswith("pixel correlation")
    finding = next(f for f in r["findings"] if f["kind"] == "label_conflicts")
    assert finding["count"] == 2 and "class_0/004.png (class_0)" in finding["message"]
    assert failing(r, ["label_conflicts"]) and Hyperparameters(fail_on=["label_conflicts"])


def test_near_duplicates_say_how_they_were_confirmed(make_dataset):
    root = make_dataset(per_class=12, size=32)
    img = Image.open(root / "class_2" / "005.png")
    ImageEnhance.Brightness(img).enhance(1.05).save(root / "class_2" / "brighter_005.png")
    r = health_report(datasets.decode(datasets.discover(root), 32), None, min_per_class=5)
    pair = r["near_duplicates"][0]
    assert (
        pair["similarity"] >= 0.995
        and "normalised correlation" in r["near_duplicates_confirmed_by"]
    )
    assert "confirmed by normalised correlation" in next(
        f["message"] for f in r["findings"] if f["kind"] == "near_duplicates"
    )


def test_one_rule_says_what_fails_a_job_for_the_job_and_preflight(make_dataset):
    from training.health import would_fail

    root = make_dataset(per_class=[12, 12, 3], size=16, corrupt=1)
    d = datasets.decode(datasets.discover(root), 16, "skip")
    r = health_report(d, None, min_per_class=5, max_imbalance=2)
    strict = would_fail(d, r, Hyperparameters(min_per_class=5))
    assert [b.step for b in strict] == ["dataset", "dataset"]
    assert strict[0].reason.startswith("1 unreadable image(s): class_0/broken_0.png")
    assert strict[1].reason == "classes with fewer than 5 images: class_2 (3)"
    lenient = would_fail(d, r, Hyperparameters(min_per_class=3, on_bad_image="skip"))
    assert lenient == []
    imbalanced = would_fail(d, r, Hyperparameters(min_per_class=3, fail_on=["imbalance"]))
    assert [b.step for b in imbalanced] == ["dataset", "health"]
