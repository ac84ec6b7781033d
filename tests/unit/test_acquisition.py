"""training/acquisition.py: the margin of calibrated probabilities, the most uncertain
first, greedy k-center spreading the picks over clusters (planted near-duplicates are
not picked together), a pool smaller than N, ties, determinism whatever the row order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.acquisition import k_center, margins, most_uncertain, normalised, rank


def test_the_margin_is_top1_minus_top2_and_orders_the_least_sure_first():
    probs = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.1, 0.45, 0.45]])
    assert margins(probs) == pytest.approx([0.2, 0.01, 0.85, 0.0])
    assert most_uncertain(margins(probs), 4).tolist() == [3, 1, 0, 2]
    assert most_uncertain(margins(probs), 2).tolist() == [3, 1]
    assert margins(np.array([[1.0], [0.25]])) == pytest.approx([0.0, 0.75])  # one class
    assert margins(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="rows, classes"):
        margins(np.array([0.5, 0.5]))


def test_ties_in_margin_go_by_key_then_by_position():
    m = np.array([0.1, 0.1, 0.0, 0.1])
    assert most_uncertain(m, 4).tolist() == [2, 0, 1, 3]
    assert most_uncertain(m, 4, keys=["c", "b", "z", "a"]).tolist() == [2, 3, 1, 0]


def _clusters(rng, centers: int, per: int, dim: int = 16, spread: float = 0.01):
    """``centers`` well-apart directions, ``per`` near-copies each (row c * per + i)."""
    c = rng.normal(size=(centers, dim))
    return np.repeat(c, per, axis=0) + spread * rng.normal(size=(centers * per, dim))


def test_k_center_takes_one_from_each_cluster_before_any_second():
    x = _clusters(np.random.default_rng(0), centers=5, per=6)
    picks = k_center(normalised(x), 5)
    assert sorted(p // 6 for p in picks) == [0, 1, 2, 3, 4]
    assert picks[0] == 0  # it starts at the first row (the most uncertain)


def test_planted_near_duplicates_of_the_least_sure_image_are_not_picked_together():
    rng = np.random.default_rng(1)
    emb = _clusters(rng, centers=8, per=1, dim=32, spread=0.0)
    # four copies of image 0 (almost the same embedding), all about as unsure as it: the
    # 10 candidates for 5 picks are the five copies and five distinct images
    dupes = emb[0] + 1e-4 * rng.normal(size=(4, 32))
    emb = np.vstack([emb, dupes])
    margin = np.concatenate([[0.01], rng.uniform(0.2, 0.5, 7), np.full(4, 0.011)])
    picks = rank(margin, emb, 5)
    copies = {0, *range(8, 12)}
    assert picks.index[0] == 0 and len(copies & set(picks.index.tolist())) == 1
    alone = rank(margin, emb, 5, pool_factor=1)  # margin alone: the copies crowd in
    assert len(copies & set(alone.index.tolist())) == 5


def test_n_larger_than_the_pool_gives_every_row_once():
    rng = np.random.default_rng(2)
    picks = rank(rng.uniform(size=7), rng.normal(size=(7, 4)), 50)
    assert sorted(picks.index.tolist()) == list(range(7))
    assert rank(np.zeros(0), np.zeros((0, 4)), 5).index.tolist() == []
    assert rank(rng.uniform(size=7), rng.normal(size=(7, 4)), 0).index.tolist() == []


def test_identical_embeddings_fall_back_to_the_margin_order():
    picks = rank(np.array([0.3, 0.1, 0.2, 0.4]), np.ones((4, 3)), 3)
    assert picks.index.tolist() == [1, 2, 0]
    assert picks.margin == pytest.approx([0.1, 0.2, 0.3])


def test_bad_shapes_and_counts_are_refused():
    with pytest.raises(ValueError, match="3 margins but 2 embeddings"):
        rank(np.zeros(3), np.zeros((2, 4)), 1)
    with pytest.raises(ValueError):
        rank(np.zeros(3), np.zeros((3, 4)), -1)


@given(
    probs=arrays(np.float64, (40, 4), elements=st.floats(0.0, 1.0)),
    emb=arrays(np.float64, (40, 3), elements=st.floats(-5, 5)),
    n=st.integers(0, 45),
    seed=st.integers(0, 1000),
)
def test_the_picks_do_not_depend_on_the_order_rows_come_in(probs, emb, n, seed):
    keys = np.array([f"img/{i:03d}.png" for i in range(40)])
    m = margins(probs)
    first = rank(m, emb, n, keys=keys)
    perm = np.random.default_rng(seed).permutation(40)
    again = rank(m[perm], emb[perm], n, keys=keys[perm])
    assert keys[perm][again.index].tolist() == keys[first.index].tolist()
    assert len(first.index) == min(n, 40) and len(set(first.index.tolist())) == len(first.index)
    # every pick is among the 2n most uncertain
    assert set(first.index.tolist()) <= set(most_uncertain(m, 2 * n, keys).tolist())
