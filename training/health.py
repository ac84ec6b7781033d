"""The data health report: know your data before training on it.

Images per class and the imbalance ratio, classes under min_per_class, unreadable files,
exact duplicates (same bytes) and near duplicates (perceptual-hash candidates confirmed in
pixel space, training.near_duplicates), the same picture under two classes (label
conflicts), duplicates that cross the train / val / test split (leakage: a test image the
model has seen in training), image sizes and channels. Each finding has a kind; the
``fail_on`` hyperparameter says which kinds fail the job.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from training.data import DecodedDataset, Split
from training.hyperparams import Hyperparameters
from training.messages import one_line
from training.near_duplicates import CONFIRMED_BY, near_duplicate_search
from training.stratify import check_bad, check_min_per_class

FINDING_KINDS = (
    "imbalance",
    "small_class",
    "unreadable",
    "duplicates",
    "near_duplicates",
    "near_duplicates_narrowed",
    "label_conflicts",
    "leakage",
)


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    count: int


def _split_of(split: Split, n: int) -> np.ndarray:
    part = np.empty(n, dtype=object)
    part[split.train], part[split.val], part[split.test] = "train", "val", "test"
    return part


def label_conflicts(
    data: DecodedDataset, exact_pairs: list[tuple[int, int]], near: list[Any]
) -> list[dict[str, Any]]:
    """Duplicate pairs whose two images carry different classes: both paths, both
    classes, and how the pair was found."""
    how = [(i, j, "same bytes") for i, j in exact_pairs] + [
        (
            p.i,
            p.j,
            f"pixel correlation {p.similarity:.3f}" + (" (mirror image)" if p.mirrored else ""),
        )
        for p in near
    ]
    return [
        {
            "a": data.paths[i],
            "a_class": data.classes[data.labels[i]],
            "b": data.paths[j],
            "b_class": data.classes[data.labels[j]],
            "how": h,
        }
        for i, j, h in how
        if data.labels[i] != data.labels[j]
    ]


def _groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the duplicate graph, groups of 2 or more, each in index
    order, ordered by their first index."""
    if not pairs:
        return []
    a, b = np.array(pairs, dtype=np.int64).T
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    comp: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(component):
        comp[int(c)].append(i)
    return sorted((g for g in comp.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class _Facts:
    """What the report is made of: per-class counts, duplicates, conflicts, leaks."""

    n: int
    per_class: dict[str, int]
    imbalance: float
    small: dict[str, int]
    exact: list[list[int]]  # groups of the same bytes
    near: list[Any]  # confirmed near-duplicate pairs (training.near_duplicates)
    radius: int  # hash bits searched
    conflicts: list[dict[str, Any]]
    part: np.ndarray | None  # each image's split part
    leaks: list[list[int]]  # duplicate groups across parts


def _facts(
    data: DecodedDataset,
    split: Split | None,
    min_per_class: int,
    near_distance: int,
    mirrored: bool,
) -> _Facts:
    n = len(data.labels)
    counts = np.bincount(data.labels, minlength=len(data.classes))
    per_class = {c: int(k) for c, k in zip(data.classes, counts)}
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else 0.0
    small = {c: k for c, k in per_class.items() if k < min_per_class}

    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(data.sha1):
        by_sha[h].append(i)
    exact = [g for g in by_sha.values() if len(g) > 1]
    exact_pairs = [(g[0], j) for g in exact for j in g[1:]]
    same_bytes = {(min(i, j), max(i, j)) for g in exact for i in g for j in g if i != j}
    near, radius = (
        near_duplicate_search(data.images, near_distance, mirrored=mirrored, exclude=same_bytes)
        if len(data.images) == n
        else ([], near_distance)
    )
    groups = _groups(n, exact_pairs + [(p.i, p.j) for p in near])
    conflicts = label_conflicts(data, exact_pairs, near)

    part = _split_of(split, n) if split is not None else None
    leaks = [g for g in groups if part is not None and len({part[i] for i in g}) > 1]
    return _Facts(n, per_class, imbalance, small, exact, near, radius, conflicts, part, leaks)


def _describe(
    data: DecodedDataset, part: np.ndarray | None, group: list[int]
) -> list[dict[str, Any]]:
    return [
        {
            "path": data.paths[i],
            "class": data.classes[data.labels[i]],
            "split": part[i] if part is not None else None,
        }
        for i in group
    ]


def _count_findings(
    data: DecodedDataset, f: _Facts, min_per_class: int, max_imbalance: float
) -> list[Finding]:
    """The findings on the images' numbers: imbalance, small classes, unreadable files."""
    findings: list[Finding] = []
    if f.imbalance > max_imbalance:
        findings.append(
            Finding(
                "imbalance",
                f"imbalance ratio {f.imbalance:.1f} (largest / "
                f"smallest class) exceeds {max_imbalance:g}",
                1,
            )
        )
    if f.small:
        findings.append(
            Finding(
                "small_class",
                "classes with fewer than "
                f"{min_per_class} images: " + ", ".join(f"{c} ({k})" for c, k in f.small.items()),
                len(f.small),
            )
        )
    if data.bad:
        findings.append(
            Finding(
                "unreadable",
                f"{len(data.bad)} unreadable file(s): " + ", ".join(p for p, _ in data.bad[:3]),
                len(data.bad),
            )
        )
    return findings


def _duplicate_findings(data: DecodedDataset, f: _Facts, near_distance: int) -> list[Finding]:
    """The findings on duplicates: exact, near, a narrowed search, conflicts, leakage."""
    findings: list[Finding] = []
    if f.exact:
        findings.append(
            Finding(
                "duplicates",
                f"{sum(len(g) - 1 for g in f.exact)} exact "
                f"duplicate file(s) in {len(f.exact)} group(s)",
                len(f.exact),
            )
        )
    if f.near:
        findings.append(
            Finding(
                "near_duplicates",
                f"{len(f.near)} near-duplicate pair(s) ({CONFIRMED_BY})",
                len(f.near),
            )
        )
    if f.radius < near_distance:
        findings.append(
            Finding(
                "near_duplicates_narrowed",
                "the images are so alike that near-duplicate candidates within "
                f"{near_distance} hash bits exceed the search's budget: searched within "
                f"{f.radius} bits"
                if f.radius >= 0
                else "the images are so alike that even identical perceptual hashes exceed "
                "the near-duplicate search's budget: no near-duplicate search",
                1,
            )
        )
    return findings + _conflict_findings(data, f)


def _conflict_findings(data: DecodedDataset, f: _Facts) -> list[Finding]:
    """The same picture under two classes, and duplicate groups across the split."""
    findings: list[Finding] = []
    if f.conflicts:
        first = f.conflicts[0]
        findings.append(
            Finding(
                "label_conflicts",
                f"{len(f.conflicts)} picture(s) filed under "
                f"two classes, e.g. {first['a']} ({first['a_class']}) ~ "
                f"{first['b']} ({first['b_class']}), {first['how']}",
                len(f.conflicts),
            )
        )
    if f.leaks:
        described = _describe(data, f.part, f.leaks[0])[:3]
        example = " ~ ".join(f"{d['path']} ({d['split']})" for d in described)
        findings.append(
            Finding(
                "leakage",
                f"{len(f.leaks)} duplicate group(s) cross the train/val/test split, e.g. {example}",
                len(f.leaks),
            )
        )
    return findings


def health_report(
    data: DecodedDataset,
    split: Split | None = None,
    *,
    min_per_class: int = 10,
    max_imbalance: float = 10.0,
    near_distance: int = 10,
    mirrored: bool = True,
    max_listed: int = 50,
) -> dict[str, Any]:
    """The report as JSON-ready data: ``findings`` (kind, message, count) and the details.

    ``near_distance`` is the hash radius of near-duplicate candidates, each confirmed in
    pixel space; ``mirrored`` counts a mirror image as the same picture (hflip on)."""
    f = _facts(data, split, min_per_class, near_distance, mirrored)
    findings = _count_findings(data, f, min_per_class, max_imbalance)
    findings += _duplicate_findings(data, f, near_distance)
    widths = np.array([w for w, _ in data.sizes]) if data.sizes else np.zeros(0)
    heights = np.array([h for _, h in data.sizes]) if data.sizes else np.zeros(0)
    return {
        "images": f.n,
        "classes": len(data.classes),
        "per_class": f.per_class,
        "imbalance_ratio": f.imbalance,
        "small_classes": f.small,
        "unreadable": [{"path": p, "reason": r} for p, r in data.bad],
        "exact_duplicates": [_describe(data, f.part, g) for g in f.exact[:max_listed]],
        "near_duplicates": [
            {
                "a": data.paths[p.i],
                "b": data.paths[p.j],
                "distance": p.distance,
                "similarity": p.similarity,
                "mirrored": p.mirrored,
            }
            for p in f.near[:max_listed]
        ],
        "near_duplicates_confirmed_by": CONFIRMED_BY,
        "near_duplicates_radius": f.radius,  # hash bits searched (less than asked: narrowed)
        "label_conflicts": f.conflicts[:max_listed],
        "leakage": [_describe(data, f.part, g) for g in f.leaks[:max_listed]],
        "sizes": {"width": _stats(widths), "height": _stats(heights)},
        "modes": dict(Counter(data.modes)),
        "findings": [x.__dict__ for x in findings],
    }


def _stats(v: np.ndarray) -> dict[str, float] | None:
    if not len(v):
        return None
    return {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}


def failing(report: dict[str, Any], fail_on: Collection[str]) -> list[str]:
    """Messages of the findings whose kind is in ``fail_on``."""
    return [f["message"] for f in report["findings"] if f["kind"] in fail_on]


@dataclass(frozen=True)
class Blocker:
    """What would fail a job, and the step it would fail (``dataset`` or ``health``)."""

    step: str
    reason: str


def would_fail(data: DecodedDataset, report: dict[str, Any], hp: Hyperparameters) -> list[Blocker]:
    """The one rule of what in the data fails a job with these settings, used by the job
    (services/jobs/steps/data.py: it fails on the first) and by ``colecionador preflight``
    (it prints them all): unreadable images unless ``on_bad_image`` is skip, a class under
    min_per_class (the split needs them), and each finding whose kind is in ``fail_on``."""
    out = []
    try:
        check_bad(data.bad, hp.on_bad_image)
    except ValueError as e:
        out.append(Blocker("dataset", one_line(e)))
    try:
        check_min_per_class(data.labels, data.classes, hp.min_per_class)
    except ValueError as e:
        out.append(Blocker("dataset", one_line(e)))
    return out + [Blocker("health", m) for m in failing(report, hp.fail_on)]
