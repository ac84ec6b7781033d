"""The banded (multi-index) search finds exactly the pairs the all-pairs search finds."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.hash_index import all_pairs, band_widths, choose_bands, flips, hash_pairs


def planted(n: int, max_flips: int, seed: int) -> np.ndarray:
    """n random 64-bit hashes, a third of them copies of others with a few bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for t in range(n // 3):
        v = h[rng.integers(n)]
        for bit in rng.choice(64, rng.integers(max_flips + 1), replace=False):
            v ^= np.uint64(1) << np.uint64(bit)
        h[t] = v
    return h


def test_pairs_by_hamming_distance():
    h = np.array([0b0, 0b1, 0b111, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
    assert hash_pairs(h, None, 1) == [(0, 1, 1)]
    assert hash_pairs(h, None, 3) == [(0, 1, 1), (0, 2, 3), (1, 2, 2)]
    assert hash_pairs(h, None, 64) == all_pairs(h, None, 64)


def test_across_two_sets_pairs_keep_i_below_j():
    h = np.array([0b0, 0b1, 0b111], dtype=np.uint64)
    assert hash_pairs(h, np.array([0b111, 0b111, 0b0], dtype=np.uint64), 0) == [(0, 2, 0)]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 400),
    d=st.integers(0, 16),
    seed=st.integers(0, 2**31),
    bands=st.one_of(st.none(), st.integers(1, 17)),
)
def test_same_pairs_as_all_pairs_on_planted_hashes(n, d, seed, bands):
    h = planted(n, d + 2, seed)
    assert hash_pairs(h, None, d, bands) == all_pairs(h, None, d)
    other = planted(n, d + 2, seed + 1)[::-1].copy()
    assert hash_pairs(h, other, d, bands) == all_pairs(h, other, d)


def test_thousands_of_planted_near_copies_at_the_jobs_radius():
    h = planted(6000, 12, 7)
    expected = all_pairs(h, None, 10)
    assert len(expected) > 1000 and hash_pairs(h, None, 10) == expected


def test_bands_cover_64_bits_and_flips_count_the_neighbourhood():
    assert all(sum(band_widths(m)) == 64 for m in range(1, 65))
    assert len(flips(16, 2)) == 1 + 16 + 120
    # more hashes -> fewer, longer bands (smaller buckets); never wider than the table
    assert choose_bands(1_000, 10) >= choose_bands(1_000_000, 10) >= 3
