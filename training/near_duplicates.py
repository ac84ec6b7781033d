"""Near duplicates: a perceptual hash proposes candidate pairs, pixels confirm them.

A 64-bit DCT hash (pHash) of a 32x32 grayscale thumbnail is cheap to compare (banded,
never all pairs: training.hash_index) but too coarse to decide: scikit-learn's 8x8
digits, upscaled, put different people's sixes within 4 bits. So the hash only proposes
pairs (within ``max_distance`` bits, and against the mirrored image where a flip counts
as the same picture), and each candidate is confirmed in pixel space: the normalised
(Pearson) correlation of 16x16 grayscale thumbnails, the best over a few 3 % crop
alignments (a crop moves the content), must reach ``THRESHOLD``.

Measured (benchmarks/near_duplicates.py, ``make bench``): on the 1,797 digits at 32 px
the largest correlation of any candidate pair is 0.991 (hash within 10 bits; 0.994
within 12), so none is confirmed; of planted copies of natural photo crops (resized,
brightened 10 %, JPEG quality 70, cropped 3 %, mirrored) 96-100 % are confirmed per
kind (the hash misses a few crops: 10 bits is the radius that keeps digits clean with a
margin), 92 % when all five are applied at once.

Images that all look alike (one camera over one production line, or the benchmark's
class-tinted noise) put most pairs within a few bits: the candidates, and the pixel
confirmation, grow with N². The search therefore has a budget of ``CANDIDATES_PER_IMAGE``
candidate pairs an image: over it, the radius shrinks (two bits at a time) until the
candidates fit, and the result says the radius it searched (the health report names
the narrowing), so time and memory stay linear in N whatever the data.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from training.hash_index import TooManyPairs, hash_pairs

if TYPE_CHECKING:
    from training.shards import ShardImages

THRESHOLD = 0.995  # normalised correlation of 16x16 grayscale thumbnails
THUMB = 16
HASH_SIDE = 32
IMAGE_BLOCK = 512  # images decoded into thumbnails at a time
CANDIDATES_PER_IMAGE = 20  # the search's budget: candidate pairs per image (at least 10k)
WORK_SIDE = 64  # smaller images are upscaled to this before the crop alignments
# crop boxes (left, top, right, bottom) as fractions of the side: none, 1.5 % all round,
# 3 % off two adjacent sides (a crop that also shifts the content)
ALIGNMENTS = (
    (0, 0, 0, 0),
    (0.015, 0.015, 0.015, 0.015),
    (0.03, 0.03, 0, 0),
    (0, 0, 0.03, 0.03),
    (0.03, 0, 0, 0.03),
    (0, 0.03, 0.03, 0),
)
CONFIRMED_BY = (
    f"perceptual-hash candidates confirmed by normalised correlation >= "
    f"{THRESHOLD} of {THUMB}x{THUMB} grayscale thumbnails (best over mirror "
    "and 3 % crop alignments)"
)


@dataclass(frozen=True)
class NearPair:
    i: int
    j: int
    distance: int  # hash bits apart
    mirrored: bool  # j matched i as its mirror image
    similarity: float  # the confirming correlation


def gray(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, S, S) -> float32 (N, S, S) grayscale (channel mean)."""
    rgb = images.astype(np.float32) if images.ndim == 3 else None
    if rgb is not None:  # one image
        one: np.ndarray = (rgb[0] + rgb[1] + rgb[2]) / 3
        return one
    many: np.ndarray = (images[:, 0].astype(np.float32) + images[:, 1] + images[:, 2]) / 3
    return many


def hash_thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, HASH_SIDE, HASH_SIDE) grayscale (luma) thumbnails of uint8 images (N, 3, S, S),
    one image at a time (a float copy of a whole data set would not fit)."""
    out = np.zeros((len(images), HASH_SIDE, HASH_SIDE), np.float32)
    for n, x in enumerate(images):
        img = Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0))).convert("L")
        out[n] = np.asarray(img.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX))
    return out


def phash(thumbs: np.ndarray) -> np.ndarray:
    """64-bit pHash of each (HASH_SIDE x HASH_SIDE) thumbnail: the 8x8 lowest DCT
    coefficients against their median."""
    if not len(thumbs):
        return np.zeros(0, np.uint64)
    coeff = dctn(thumbs, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(thumbs), 64)
    bits = coeff > np.median(coeff, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hashes(images: np.ndarray | ShardImages) -> tuple[np.ndarray, np.ndarray]:
    """pHashes of the images and of their mirror images, a block of images at a time
    (16 bytes an image kept, whatever ``images`` holds)."""
    h = np.zeros(len(images), np.uint64)
    hm = np.zeros(len(images), np.uint64)
    for s in range(0, len(images), IMAGE_BLOCK):
        thumbs = hash_thumbnails(images[s : s + IMAGE_BLOCK])
        h[s : s + len(thumbs)] = phash(thumbs)
        hm[s : s + len(thumbs)] = phash(np.ascontiguousarray(thumbs[:, :, ::-1]))
    return h, hm


def candidate_budget(n: int) -> int:
    return max(10_000, CANDIDATES_PER_IMAGE * n)


def candidates(
    images: np.ndarray | ShardImages,
    max_distance: int,
    mirrored: bool,
    limit: int | None = None,
) -> tuple[dict[tuple[int, int], tuple[int, bool]], int]:
    """(i, j) -> (hash distance, mirrored) for every pair the hash proposes within the
    radius searched, and that radius: ``max_distance``, or less when more than ``limit``
    pairs fall within it (``candidate_budget`` when None)."""
    h, hm = hashes(images)
    limit = candidate_budget(len(h)) if limit is None else limit
    d = max_distance
    while d >= 0:
        try:
            plain = hash_pairs(h, None, d, limit=limit)
            flipped = hash_pairs(h, hm, d, limit=limit - len(plain)) if mirrored else []
        except TooManyPairs:
            d = d - 2 if d >= 2 else d - 1  # ... 2, 0, then nothing (-1)
            continue
        found = {(i, j): (k, False) for i, j, k in plain}
        for i, j, k in flipped:
            if (i, j) not in found or found[(i, j)][0] > k:
                found[(i, j)] = (k, True)
        return found, d
    return {}, -1


def aligned_thumbnails(images: np.ndarray, mirror: bool = False) -> np.ndarray:
    """(N, len(ALIGNMENTS), THUMB*THUMB) z-scored grayscale thumbnails of uint8 images,
    one per crop alignment (of the mirror images when asked)."""
    out = np.empty((len(images), len(ALIGNMENTS), THUMB, THUMB), np.float32)
    for n, x in enumerate(images):
        g = gray(x)
        img = Image.fromarray(np.ascontiguousarray(g[:, ::-1]) if mirror else g)
        if img.width < WORK_SIDE:
            img = img.resize((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR)
        s = img.width
        for k, (left, top, right, bottom) in enumerate(ALIGNMENTS):
            box = (left * s, top * s, s - right * s, s - bottom * s)
            out[n, k] = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BOX, box=box))
    flat = out.reshape(len(images), len(ALIGNMENTS), -1)
    flat -= flat.mean(axis=-1, keepdims=True)
    flat /= flat.std(axis=-1, keepdims=True) + 1e-6
    return flat


def similarity(
    images: np.ndarray | ShardImages, pairs: list[tuple[int, int, bool]], chunk: int = 4096
) -> np.ndarray:
    """Best normalised correlation of each pair (i, j, mirrored): i's full thumbnail
    against each alignment of j (mirrored when asked), and the other way round."""
    if not pairs:
        return np.zeros(0)
    used = sorted({k for i, j, _ in pairs for k in (i, j)})
    at = {k: n for n, k in enumerate(used)}
    # thumbnails (12 KB an image) built a block of images at a time: ``images`` may be a
    # lazy array over shards, and the candidates' images together need not fit in memory
    plain = np.empty((len(used), len(ALIGNMENTS), THUMB * THUMB), np.float32)
    mirror = np.empty_like(plain)
    for s in range(0, len(used), IMAGE_BLOCK):
        block = images[used[s : s + IMAGE_BLOCK]]
        plain[s : s + len(block)] = aligned_thumbnails(block)
        mirror[s : s + len(block)] = aligned_thumbnails(block, mirror=True)
    ia = np.array([at[i] for i, _, _ in pairs])
    ib = np.array([at[j] for _, j, _ in pairs])
    mir = np.array([m for _, _, m in pairs])
    out = np.empty(len(pairs))
    for s in range(0, len(pairs), chunk):
        sl = slice(s, s + chunk)
        a = plain[ia[sl]]
        b = np.where(mir[sl, None, None], mirror[ib[sl]], plain[ib[sl]])
        one_way = (a[:, :1] * b).mean(axis=-1).max(axis=1)
        other_way = (a * b[:, :1]).mean(axis=-1).max(axis=1)
        out[sl] = np.maximum(one_way, other_way)
    return out


def near_duplicates(
    images: np.ndarray | ShardImages, max_distance: int = 10, **options: Any
) -> list[NearPair]:
    """Confirmed near-duplicate pairs of uint8 images (N, 3, S, S), i < j, in index order
    (``near_duplicate_search``'s pairs; the same options)."""
    return near_duplicate_search(images, max_distance, **options)[0]


def near_duplicate_search(
    images: np.ndarray | ShardImages,
    max_distance: int = 10,
    *,
    mirrored: bool = True,
    threshold: float = THRESHOLD,
    exclude: Container[tuple[int, int]] = frozenset(),
    limit: int | None = None,
) -> tuple[list[NearPair], int]:
    """Confirmed near-duplicate pairs of uint8 images (N, 3, S, S), i < j, in index
    order, and the hash radius searched (``max_distance``, or less when the candidates
    were over the budget; -1: not even identical hashes fit). ``exclude`` drops pairs
    known already (exact duplicates); ``limit``: the candidate budget
    (``candidate_budget`` when None)."""
    found, radius = candidates(images, max_distance, mirrored, limit)
    cand = {k: v for k, v in found.items() if k not in exclude}
    keys = sorted(cand)
    sims = similarity(images, [(i, j, cand[(i, j)][1]) for i, j in keys])
    pairs = [
        NearPair(i, j, cand[(i, j)][0], cand[(i, j)][1], round(float(s), 4))
        for (i, j), s in zip(keys, sims)
        if s >= threshold
    ]
    return pairs, radius
