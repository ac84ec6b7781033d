"""Drift between batches: a new batch against the data of the version in production.

Each version keeps a small profile of its data (``data_profile``: images per class and,
for its test split, each image's path, class, SHA-1 and 64-bit pHash). A new batch is
compared with it (``compare``):

- class distribution shift: total variation distance between the two class shares
  (0 = the same mix, 1 = disjoint) and Pearson's chi-square test of homogeneity on the
  2 x classes table of counts (scipy.stats.chi2_contingency);
- new classes (in the batch, not in the version) and missing ones (the other way);
- leakage across versions: batch images identical (same SHA-1) to, or whose pHash lies
  within ``max_bits`` of, an image of the previous version's test split. Trained on, such
  an image makes the next comparison of versions on that test split flattering. Only
  hashes are kept with a version, so a hash match is not confirmed in pixel space: on
  scikit-learn's digits (32 px) 0.6 % of images have a different digit within 2 bits and
  5.3 % within 4, hence the tight default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import chi2_contingency

from training.near_duplicates import hashes

if TYPE_CHECKING:
    from training.shards import ShardImages

PROFILE_FORMAT = "colecionador.data_profile/1"
LEAKAGE_BITS = 2  # pHash radius of a cross-version match
SHIFT_TV = 0.1  # total variation above which the class mix counts as shifted
MAX_LISTED = 50


def image_hashes(images: np.ndarray | ShardImages) -> np.ndarray:
    """64-bit pHashes (uint64) of uint8 (N, 3, S, S) images, a block at a time (the
    near-duplicate search's own hashes, training.near_duplicates)."""
    return hashes(images)[0]


def data_profile(
    classes: list[str],
    labels: np.ndarray,
    test: np.ndarray,
    paths: list[str],
    sha1: list[str],
    test_hashes: np.ndarray,
) -> dict[str, Any]:
    """data_profile.json of a version: images per class (the whole batch) and its test
    split's images (path, class, SHA-1, pHash as 16 hex digits); ``test``: the indices of
    the test split, ``test_hashes`` their pHashes."""
    counts = np.bincount(np.asarray(labels), minlength=len(classes))
    return {
        "format": PROFILE_FORMAT,
        "images": int(len(labels)),
        "per_class": {c: int(n) for c, n in zip(classes, counts)},
        "test": [
            {
                "path": paths[i],
                "class": classes[labels[i]],
                "sha1": sha1[i],
                "phash": f"{int(h):016x}",
            }
            for i, h in zip(test, test_hashes)
        ],
    }


def class_shift(previous: dict[str, int], current: dict[str, int]) -> dict[str, Any]:
    """Total variation and chi-square between two class-count mappings, with the classes
    that appeared and the ones that went missing."""
    names = sorted(set(previous) | set(current))
    a = np.array([previous.get(c, 0) for c in names], dtype=np.float64)
    b = np.array([current.get(c, 0) for c in names], dtype=np.float64)
    tv = 0.5 * float(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())
    table = np.vstack([a, b])[:, (a + b) > 0]
    if table.shape[1] >= 2 and a.sum() and b.sum():
        res = chi2_contingency(table, correction=False)
        chi: dict[str, float | None]
        chi = {"statistic": float(res.statistic), "dof": int(res.dof), "p_value": float(res.pvalue)}
    else:
        chi = {"statistic": None, "dof": 0, "p_value": None}
    return {
        "total_variation": tv,
        "chi_square": chi,
        "new_classes": [c for c in names if current.get(c, 0) and not previous.get(c, 0)],
        "missing_classes": [c for c in names if previous.get(c, 0) and not current.get(c, 0)],
        "previous_per_class": {c: int(previous.get(c, 0)) for c in names},
        "current_per_class": {c: int(current.get(c, 0)) for c in names},
    }


def cross_matches(
    a: np.ndarray, b: np.ndarray, max_bits: int, chunk: int = 2048
) -> list[tuple[int, int, int]]:
    """(i, j, bits) for every ``a[i]``, ``b[j]`` whose hashes differ in at most ``max_bits``
    bits (a vectorised popcount over a x b, in chunks of a)."""
    a, b = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
    out: list[tuple[int, int, int]] = []
    for s in range(0, len(a), chunk):
        dist = np.bitwise_count(a[s : s + chunk, None] ^ b[None, :])
        out += [
            (int(i + s), int(j), int(dist[i, j])) for i, j in zip(*np.nonzero(dist <= max_bits))
        ]
    return out


def leakage(
    previous_test: list[dict[str, Any]],
    paths: list[str],
    classes_of: list[str],
    sha1: list[str],
    hashes: np.ndarray,
    max_bits: int = LEAKAGE_BITS,
) -> list[dict[str, Any]]:
    """Batch images identical or pHash-close to an image of the previous test split: the
    batch image, the previous one, their classes and how they matched (closest first)."""
    by_sha = {t["sha1"]: k for k, t in enumerate(previous_test)}
    prev_hashes = np.array([int(t["phash"], 16) for t in previous_test], dtype=np.uint64)
    best: dict[int, tuple[int, int, str]] = {}  # batch image -> (bits, previous, how)
    for i, h in enumerate(sha1):
        if h in by_sha:
            best[i] = (0, by_sha[h], "same bytes")
    for i, j, bits in cross_matches(hashes, prev_hashes, max_bits):
        if i not in best or best[i][0] > bits:
            best[i] = (bits, j, f"pHash within {bits} bit(s)")
    return [
        {
            "path": paths[i],
            "class": classes_of[i],
            "previous_test_path": previous_test[j]["path"],
            "previous_class": previous_test[j]["class"],
            "bits": bits,
            "how": how,
        }
        for i, (bits, j, how) in sorted(best.items(), key=lambda kv: (kv[1][0], kv[0]))
    ]


def compare(
    previous: dict[str, Any],
    per_class: dict[str, int],
    paths: list[str],
    classes_of: list[str],
    sha1: list[str],
    hashes: np.ndarray,
    *,
    max_bits: int = LEAKAGE_BITS,
    shift_tv: float = SHIFT_TV,
) -> dict[str, Any]:
    """The health report's ``drift`` section: the new batch (per-class counts, and per
    image its path, class, SHA-1 and pHash) against a version's ``data_profile``, with
    ``findings`` (class_shift, new_classes, missing_classes, version_leakage) in the
    health report's form."""
    shift = class_shift(previous["per_class"], per_class)
    leaks = leakage(previous.get("test", []), paths, classes_of, sha1, hashes, max_bits)
    findings = []
    tv = shift["total_variation"]
    if tv > shift_tv:
        chi = shift["chi_square"]
        p = f", chi-square p = {chi['p_value']:.2g}" if chi["p_value"] is not None else ""
        findings.append(
            {
                "kind": "class_shift",
                "message": f"class mix shifted from the production version's data: total "
                f"variation {tv:.3f} > {shift_tv:g}{p}",
                "count": 1,
            }
        )
    for kind, word in (("new_classes", "new"), ("missing_classes", "missing")):
        if shift[kind]:
            findings.append(
                {
                    "kind": kind,
                    "message": f"{len(shift[kind])} class(es) {word} against the production "
                    f"version: {', '.join(shift[kind][:10])}",
                    "count": len(shift[kind]),
                }
            )
    if leaks:
        first = leaks[0]
        findings.append(
            {
                "kind": "version_leakage",
                "message": f"{len(leaks)} image(s) match the production version's test split, "
                f"e.g. {first['path']} ~ {first['previous_test_path']} ({first['how']})",
                "count": len(leaks),
            }
        )
    return {
        **shift,
        "leakage": leaks[:MAX_LISTED],
        "leakage_count": len(leaks),
        "leakage_matched_by": f"same SHA-1, or pHash within {max_bits} bits (not confirmed "
        "in pixel space: only hashes are kept with a version)",
        "previous_test_images": len(previous.get("test", [])),
        "findings": findings,
    }
