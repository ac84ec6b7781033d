"""What to label next: the unlabelled images whose labels would teach the model most.

Uncertainty first: an image's ``margin`` is the gap between its two most probable
classes under the calibrated probabilities (top1 - top2; 1 - top1 for a one-class
model): a small margin is a case the model cannot separate. Then diversity: the 2N most
uncertain of the pool (``POOL_FACTOR``) are the candidates, and greedy k-center (farthest
first; Sener & Savarese, ICLR 2018) on the model's embeddings picks N of them spread over
the candidates, so N near-copies of one hard case are not N picks. The first pick is the
most uncertain candidate; each next one is the candidate farthest (Euclidean, on
L2-normalised embeddings) from every pick so far, the more uncertain one on a tie.

Pure numpy; deterministic: the same margins, embeddings and keys give the same picks in
the same order, whatever order the rows came in when ``keys`` (e.g. paths) are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POOL_FACTOR = 2  # the candidates for k-center: the POOL_FACTOR * N most uncertain


def margins(probs: np.ndarray) -> np.ndarray:
    """top1 - top2 of each row of (M, C) probabilities (1 - top1 when C == 1), float64."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (rows, classes), not {p.shape}")
    if p.shape[0] == 0:
        return np.zeros(0)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def most_uncertain(
    margin: np.ndarray, m: int, keys: Sequence[str] | np.ndarray | None = None
) -> np.ndarray:
    """Indices of the ``m`` smallest margins, smallest first; ties by ``keys`` (then index)."""
    margin = np.asarray(margin, dtype=np.float64)
    order = (
        np.lexsort((np.arange(len(margin)), np.asarray(keys, dtype=str), margin))
        if keys is not None
        else np.argsort(margin, kind="stable")
    )
    return order[: max(0, m)]


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float64."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def k_center(embeddings: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-center over (M, D) rows: row 0 first, then each time the row farthest
    from every row picked so far (the first such row on a tie). min(n, M) indices, in
    the order picked."""
    x = np.asarray(embeddings, dtype=np.float64)
    count = min(max(0, n), len(x))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    picked = [0]
    nearest = np.linalg.norm(x - x[0], axis=1)  # each row's distance to its nearest pick
    for _ in range(count - 1):
        nearest[picked[-1]] = -1.0  # a pick is never picked again
        nxt = int(np.argmax(nearest))
        picked.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(picked, dtype=np.int64)


@dataclass(frozen=True)
class Picks:
    """The rows to label next, in rank order (``index`` into the pool), with their margins."""

    index: np.ndarray
    margin: np.ndarray


def rank(
    margin: np.ndarray,
    embeddings: np.ndarray,
    n: int,
    keys: Sequence[str] | np.ndarray | None = None,
    pool_factor: int = POOL_FACTOR,
) -> Picks:
    """The ``n`` rows (fewer when the pool is smaller) to label next: greedy k-center on
    the normalised ``embeddings`` of the ``pool_factor * n`` most uncertain rows, started
    at the most uncertain (see the module). ``pool_factor`` 1 is margin alone."""
    margin = np.asarray(margin, dtype=np.float64)
    if len(margin) != len(embeddings):
        raise ValueError(f"{len(margin)} margins but {len(embeddings)} embeddings")
    if n < 0 or pool_factor < 1:
        raise ValueError("n must be >= 0 and pool_factor >= 1")
    candidates = most_uncertain(margin, pool_factor * n, keys)
    order = k_center(normalised(np.asarray(embeddings)[candidates]), n)
    index = candidates[order]
    return Picks(index=index, margin=margin[index])
