"""A data set's listing: a local folder (``discover``: ImageFolder layout or a
``manifest.csv``) or the same two layouts listed from an object store
(``discover_listing``: keys, sizes and ETags under a prefix, the manifest's text)."""

from __future__ import annotations

import csv
import io
import posixpath
from pathlib import Path

import numpy as np

from training.dataset_types import IMAGE_EXTENSIONS, MANIFEST, DataError, DatasetIndex


def discover(root: str | Path) -> DatasetIndex:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset not found: {root} is not a folder")
    if (root / MANIFEST).is_file():
        return _from_manifest(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        for p in sorted((root / name).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or p.is_symlink()):
                paths.append(p)  # a symlink leaving the folder is listed as unreadable
                labels.append(i)
    if not paths:
        raise DataError(
            f"dataset {root} has no images: expected <class>/<image> folders or {MANIFEST}"
        )
    if len(classes) < 2:
        raise DataError(f"dataset {root} has {len(classes)} class; at least 2 are needed")
    return DatasetIndex(root, paths, np.asarray(labels, dtype=np.int64), classes)


def _manifest_rows(text: str, where: str) -> list[dict[str, str]]:
    rows = [r for r in csv.DictReader(io.StringIO(text, newline=""))]
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{where} must have 'path' and 'label' columns")
    return rows


def _outside(n: int, path: str) -> DataError:
    return DataError(f"{MANIFEST} line {n}: {path!r} is not a file inside the dataset folder")


def _from_manifest(root: Path) -> DatasetIndex:
    with open(root / MANIFEST, newline="") as f:
        rows = _manifest_rows(f.read(), str(root / MANIFEST))
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    inside = root.resolve()
    paths = []
    for n, r in enumerate(rows, start=2):  # line 1 is the header
        path = root / r["path"]
        if inside not in path.resolve().parents:
            raise _outside(n, r["path"])
        paths.append(path)
    labels = np.asarray([index[r["label"]] for r in rows], dtype=np.int64)
    if len(classes) < 2:
        raise DataError(f"dataset {root} has {len(classes)} class; at least 2 are needed")
    return DatasetIndex(root, paths, labels, classes)


def _plain(rel: str) -> bool:
    """A relative path that names a file inside the prefix as written: no absolute path,
    no empty, ``.`` or ``..`` part (an object key is read exactly as listed, so
    ``a/../b`` would be another object than the one a folder copy would hold)."""
    parts = rel.split("/")
    return bool(rel) and all(p not in ("", ".", "..") for p in parts) and "\\" not in rel


def discover_listing(
    source: str,
    objects: list[tuple[str, int, str]],
    manifest_text: str | None = None,
) -> DatasetIndex:
    """The remote listing of a data set from its objects under a prefix: ``objects`` are
    (key relative to the prefix, size, ETag); ``manifest_text``: the prefix's
    ``manifest.csv`` when it has one. The same layouts, rules and errors as ``discover``:
    ImageFolder (``<class>/<image>``, classes are the first-level folders not starting
    with ``.``, images by extension, in path order), or the manifest's rows in order (a
    path must stay inside the prefix; one not in the listing is listed, and unreadable).
    A key that leaves the prefix (``..``) is refused, as a folder copy refuses it."""
    for rel, _, _ in objects:
        norm = posixpath.normpath(rel)
        if norm == ".." or norm.startswith("../") or rel.startswith("/"):
            raise DataError(f"refusing object {source}{rel}: its key leaves the dataset folder")
    listed = {rel: (size, etag) for rel, size, etag in objects}
    if manifest_text is not None:
        rows = _manifest_rows(manifest_text, f"{source}{MANIFEST}")
        classes = sorted({r["label"] for r in rows})
        for n, r in enumerate(rows, start=2):
            if not _plain(r["path"]) or r["path"] == MANIFEST:
                raise _outside(n, r["path"])
        index = {c: i for i, c in enumerate(classes)}
        names = [r["path"] for r in rows]
        labels = [index[r["label"]] for r in rows]
    else:
        firsts = {rel.split("/", 1)[0] for rel, _, _ in objects if "/" in rel}
        classes = sorted(c for c in firsts if c and not c.startswith("."))
        at = {c: i for i, c in enumerate(classes)}
        images = [
            rel
            for rel, _, _ in objects
            if "/" in rel
            and rel.split("/", 1)[0] in at
            and posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS
        ]
        images.sort(key=lambda rel: rel.split("/"))  # the order of sorted local paths
        names = images
        labels = [at[rel.split("/", 1)[0]] for rel in images]
        if not names:
            raise DataError(
                f"dataset {source} has no images: expected <class>/<image> folders or {MANIFEST}"
            )
    if len(classes) < 2:
        raise DataError(f"dataset {source} has {len(classes)} class; at least 2 are needed")
    return DatasetIndex(
        Path("."),
        [],
        np.asarray(labels, dtype=np.int64),
        classes,
        source=source,
        names=names,
        sizes=[listed.get(n, (-1, ""))[0] for n in names],
        etags=[listed.get(n, (-1, ""))[1] for n in names],
    )
