"""Near duplicates are proposed by a hash and confirmed by pixels: none on data without
any (scikit-learn's digits), nearly all of the planted copies found (the figures
``make bench`` prints, kept here as tests)."""

import numpy as np
import pytest

from benchmarks.near_duplicates import TRANSFORMS, false_positives, recall
from training.near_duplicates import hash_pairs, near_duplicates, similarity


def test_digits_hold_no_confirmed_near_duplicates(tmp_path):
    fp = false_positives(tmp_path, 32)
    assert fp["images"] == 1797 and fp["candidates"] > 1000  # the hash alone cries wolf
    assert fp["confirmed"] == 0


@pytest.fixture(scope="module")
def planted_recall(tmp_path_factory):
    return recall(tmp_path_factory.mktemp("planted"), 32)


@pytest.mark.parametrize("kind", [k for k in TRANSFORMS if k != "all"])
def test_planted_copies_are_found(planted_recall, kind):
    assert planted_recall[kind] >= 0.95


def test_planted_copies_found_overall_and_with_everything_at_once(planted_recall):
    single = [r for k, r in planted_recall.items() if k != "all"]
    assert np.mean(single) >= 0.97 and planted_recall["all"] >= 0.85


def test_a_mirror_image_is_a_near_duplicate_only_when_mirrors_count():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3).astype(np.uint8)
    other = rng.integers(0, 255, (1, 3, 32, 32)).astype(np.uint8)
    images = np.concatenate([img, img[..., ::-1], other])
    assert [(p.i, p.j, p.mirrored) for p in near_duplicates(images)] == [(0, 1, True)]
    assert near_duplicates(images, mirrored=False) == []


def test_similarity_is_the_normalised_correlation_invariant_to_brightness():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 200, (1, 3, 64, 64)).astype(np.uint8)
    images = np.concatenate([a, (a * 1.2 + 10).astype(np.uint8), 255 - a])
    s = similarity(images, [(0, 1, False), (0, 2, False)])
    assert s[0] == pytest.approx(1.0, abs=1e-3) and s[1] < 0


def test_hash_pairs_within_and_across_two_sets():
    h = np.array([0b0, 0b1, 0b111], dtype=np.uint64)
    assert hash_pairs(h, None, 1) == [(0, 1, 1)]
    assert hash_pairs(h, np.array([0b111, 0b111, 0b0], dtype=np.uint64), 0) == [(0, 2, 0)]


def test_a_pair_count_over_the_limit_is_counted_not_listed():
    from training.hash_index import TooManyPairs

    h = np.zeros(50, dtype=np.uint64)  # 1,225 identical pairs
    with pytest.raises(TooManyPairs) as e:
        hash_pairs(h, None, 0, limit=1000)
    assert e.value.count == 1225 and e.value.limit == 1000
    assert len(hash_pairs(h, None, 0, limit=1225)) == 1225


def test_images_that_all_look_alike_narrow_the_search_to_its_budget(monkeypatch):
    """40 noisy variations of one picture plus 10 distinct ones: within 10 bits every
    pair of the 40 is a candidate (780, more with mirrors); a budget of what fits at 0
    bits narrows the radius two bits at a time until the candidates fit, and the health
    report names the narrowing; a budget nothing fits turns the search off (-1)."""
    from training import near_duplicates as nd
    from training.data import DecodedDataset
    from training.health import health_report

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)
    alike = np.clip(base + rng.integers(-20, 21, (40, 3, 32, 32)), 0, 255)
    distinct = rng.integers(0, 255, (10, 3, 32, 32))
    images = np.concatenate([alike, distinct]).astype(np.uint8)
    full, radius = nd.candidates(images, 10, True)
    assert radius == 10 and len(full) >= 780
    budget = len(nd.candidates(images, 0, True)[0])  # what fits at 0 bits
    assert 0 < budget < len(full)
    narrowed, radius = nd.candidates(images, 10, True, limit=budget)
    assert 0 <= radius < 10 and 0 < len(narrowed) <= budget and set(narrowed) <= set(full)
    assert nd.candidates(images, 10, True, limit=budget - 1) == ({}, -1)
    found, radius = nd.near_duplicate_search(images, 10, limit=budget)
    assert radius < 10 and {(p.i, p.j) for p in found} <= set(narrowed)

    monkeypatch.setattr(nd, "candidate_budget", lambda n: budget)
    d = DecodedDataset(
        images,
        np.arange(50) % 2,
        ["a", "b"],
        paths=[f"{i}.png" for i in range(50)],
        sizes=[(32, 32)] * 50,
        modes=["RGB"] * 50,
        sha1=[str(i) for i in range(50)],
    )
    r = health_report(d, None, min_per_class=5)
    assert r["near_duplicates_radius"] == radius
    (f,) = [f for f in r["findings"] if f["kind"] == "near_duplicates_narrowed"]
    assert f"searched within {radius} bits" in f["message"]
