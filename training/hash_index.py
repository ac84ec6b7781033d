"""Pairs of 64-bit hashes within a Hamming distance, without comparing all pairs.

Multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012): cut the 64 bits into ``m``
bands. Two hashes at most ``d`` bits apart differ in at most ``d // m`` bits in at least
one band (pigeonhole), so each hash is looked up, band by band, in a sorted table of the
other hashes' band values under every flip of at most ``d // m`` bits, and only those
candidates are compared on all 64 bits. ``m = d + 1`` is the plain "share one band
exactly" scheme; fewer, longer bands make the buckets smaller at the price of more
lookups. The number of bands is chosen from ``N`` and ``d`` by the expected work for
uniform hashes (lookups plus candidates), so the cost grows about linearly with ``N``
where all pairs grow with ``N²``; the result is exactly the all-pairs result
(``all_pairs`` is kept as the reference the tests compare with).
"""

from __future__ import annotations

from functools import cache
from itertools import combinations
from math import comb

import numpy as np

BITS = 64
MAX_WIDTH = 22  # a band's bucket table: 2**22 + 1 int64 = 32 MB
FEWEST = -(-BITS // MAX_WIDTH)  # bands, so that none is wider than MAX_WIDTH


def all_pairs(
    a: np.ndarray, b: np.ndarray | None, max_distance: int, chunk: int = 2048
) -> list[tuple[int, int, int]]:
    """The reference: pairs (i, j, distance), i < j, with ``a[i]`` and ``b[j]`` (``a[j]``
    when ``b`` is None) within ``max_distance`` bits, by an all-pairs popcount in chunks."""
    a = np.asarray(a, dtype=np.uint64)
    b = a if b is None else np.asarray(b, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(a), chunk):
        dist = np.bitwise_count(a[start : start + chunk, None] ^ b[None, :])
        for i, j in zip(*np.nonzero(dist <= max_distance)):
            if i + start < j:
                pairs.append((int(i + start), int(j), int(dist[i, j])))
    return pairs


def band_widths(m: int) -> list[int]:
    """64 bits cut into ``m`` bands as even as can be (the first ones a bit wider)."""
    return [BITS // m + (1 if k < BITS % m else 0) for k in range(m)]


def _lookups(width: int, radius: int) -> int:
    return sum(comb(width, r) for r in range(radius + 1))


def choose_bands(n: int, max_distance: int) -> int:
    """The number of bands with the least expected work for ``n`` uniform hashes: per hash
    and band, the lookups (flips within the band's radius) and the candidates they meet."""

    def work(m: int) -> float:
        radius = max_distance // m
        return sum(_lookups(w, radius) * (1 + n / 2.0**w) for w in band_widths(m))

    return min(range(FEWEST, max(FEWEST, min(max_distance + 1, BITS)) + 1), key=work)


@cache
def flips(width: int, radius: int) -> np.ndarray:
    """Every mask of at most ``radius`` set bits among ``width``: the keys to look up."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << k for k in bits) for bits in combinations(range(width), r)]
    return np.array(masks, dtype=np.uint64)


class TooManyPairs(ValueError):
    """More pairs than the caller's ``limit``: found, counted, not listed."""

    def __init__(self, count: int, limit: int):
        super().__init__(f"{count} pairs or more, over the limit of {limit}")
        self.count, self.limit = count, limit


CHUNK = 1 << 22  # candidate pairs materialised at a time (~100 MB of index arrays)


def _row_chunks(sizes: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """Row ranges whose candidates add up to about ``chunk`` (a row more than ``chunk`` on
    its own is a range of its own)."""
    ends = np.cumsum(sizes)
    out, r0 = [], 0
    while r0 < len(sizes):
        base = ends[r0 - 1] if r0 else 0
        r1 = int(np.searchsorted(ends, base + chunk, side="right"))
        r1 = max(r1, r0 + 1)
        if ends[r1 - 1] > base:
            out.append((r0, r1))
        r0 = r1
    return out


class _Found:
    """Pair codes (i * len(b) + j) as they are found, the same pair found again under
    another band or flip merged away whenever the held codes reach twice the limit: over
    ``limit`` distinct pairs raises ``TooManyPairs`` (memory stays ~``limit``)."""

    def __init__(self, limit: int | None):
        self.parts: list[np.ndarray] = []
        self.limit, self.held = limit, 0

    def add(self, codes: np.ndarray) -> None:
        self.parts.append(codes)
        self.held += len(codes)
        if self.limit is not None and self.held > 2 * self.limit + CHUNK:
            self._merge()

    def _merge(self) -> None:
        merged = np.unique(np.concatenate(self.parts)) if self.parts else np.zeros(0, np.int64)
        self.parts, self.held = [merged], len(merged)
        if self.limit is not None and self.held > self.limit:
            raise TooManyPairs(self.held, self.limit)

    def codes(self) -> np.ndarray:
        self._merge()
        return self.parts[0]


def hash_pairs(
    a: np.ndarray,
    b: np.ndarray | None,
    max_distance: int,
    bands: int | None = None,
    limit: int | None = None,
) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, with ``a[i]`` and ``b[j]`` (``a[j]`` when ``b`` is
    None) within ``max_distance`` bits, in (i, j) order: the same list as ``all_pairs``.
    More than ``limit`` pairs raise ``TooManyPairs`` before any is listed (8 bytes a
    pair counted, where the list costs ~100), as soon as the pairs found so far exceed
    it: its ``count`` is then a lower bound."""
    a = np.asarray(a, dtype=np.uint64)
    b = a if b is None else np.asarray(b, dtype=np.uint64)
    if len(a) < 2 or len(b) < 2:
        return all_pairs(a, b, max_distance)
    m = max(bands or choose_bands(max(len(a), len(b)), max_distance), FEWEST)
    radius = max_distance // m
    found = _Found(limit)
    shift = 0
    for width in band_widths(m):
        mask = np.uint64((1 << width) - 1)
        ka = (a >> np.uint64(shift)) & mask
        kb = (b >> np.uint64(shift)) & mask
        # a bucket table addressed by the band's value: b's indices sorted by band value,
        # and where each value's run starts (one gather a lookup, no search)
        order = np.argsort(kb, kind="stable")
        starts = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(np.bincount(kb.astype(np.int64), minlength=1 << width), out=starts[1:])
        for flip in flips(width, radius):
            q = (ka ^ flip).astype(np.int64)
            lo, hi = starts[q], starts[q + 1]
            sizes = hi - lo
            if not sizes.any():
                continue
            # rows a few million candidates at a time: hashes that are all alike put
            # every pair in one bucket (N² candidates), and a limit stops it early
            for r0, r1 in _row_chunks(sizes, CHUNK):
                sz = sizes[r0:r1]
                i = np.repeat(np.arange(r0, r1), sz)
                j = order[np.repeat(hi[r0:r1] - sz.cumsum(), sz) + np.arange(sz.sum())]
                keep = i < j
                i, j = i[keep], j[keep]
                near = np.bitwise_count(a[i] ^ b[j]) <= max_distance
                found.add(i[near].astype(np.int64) * len(b) + j[near])
        shift += width
    codes = found.codes()
    if not len(codes):
        return []
    i, j = np.divmod(codes, len(b))
    dist = np.bitwise_count(a[i] ^ b[j])
    return [(int(x), int(y), int(d)) for x, y, d in zip(i, j, dist)]
