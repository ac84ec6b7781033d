"""Dataset discovery, decoding and the stratified, seeded train / val / test split.

A dataset is a local folder in ImageFolder layout (``<root>/<class>/<image>``) or a folder
with a ``manifest.csv`` (``path,label`` rows, paths relative to the folder). Images are
decoded once, resized to the training size and kept as one uint8 array (N, 3, H, W), which
is what the workers share: decoding JPEGs every epoch is the usual bottleneck.

The same two layouts listed from an object store (``discover_listing``: keys, sizes and
ETags under a prefix, the manifest's text) give a remote listing: nothing is on this
machine, the decode tasks read each object themselves (training/shards.py, through a
``reader`` the services give) and check it with the same rules (``decode_bytes``).

This module decodes a whole local listing (``decode``) and keys a listing's version
(``fingerprint``); it re-exports the parts, each in its own module: the types
(training/dataset_types.py), the listing (training/discovery.py), one image's decoding
(training/decoding.py) and the split (training/stratify.py).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.dataset_types import (
    IMAGE_EXTENSIONS,
    MANIFEST,
    DataError,
    DatasetIndex,
    DecodedDataset,
    Split,
)
from training.decoding import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ListedFileMissing,
    ObjectReader,
    UnreadableImage,
    decode_bytes,
    decode_listed_or_reason,
    decode_or_reason,
)
from training.discovery import discover, discover_listing
from training.stratify import check_bad, check_min_per_class, kfold, split

__all__ = [
    "DECODER_VERSION",
    "IMAGE_EXTENSIONS",
    "MANIFEST",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "DataError",
    "DatasetIndex",
    "DecodedDataset",
    "ListedFileMissing",
    "ObjectReader",
    "Split",
    "UnreadableImage",
    "check_bad",
    "check_min_per_class",
    "decode",
    "decode_bytes",
    "decode_listed_or_reason",
    "decode_or_reason",
    "discover",
    "discover_listing",
    "fingerprint",
    "kfold",
    "load",
    "split",
]

DECODER_VERSION = 1  # bump when decoding changes (resize, hash): cached shards are redone


def _stamps(index: DatasetIndex) -> list[str]:
    if index.remote:  # the store's content identity: the same on every driver
        assert index.sizes is not None and index.etags is not None
        return [f"{n}|etag:{e}" if n >= 0 else "missing" for n, e in zip(index.sizes, index.etags)]
    stamps = []
    for p in index.paths:
        try:
            st = p.stat()  # the target of a link: its content is what is decoded
            stamps.append(f"{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            stamps.append("missing")
    return stamps


def fingerprint(index: DatasetIndex, image_size: int) -> str:
    """The data set version's key: sha1 of the listing in its order (relative path, class,
    a stamp of the file's content), the image size and the decoder's version. A file
    added, removed, relabelled, reordered or rewritten changes it; no file's bytes are read
    (a 1M-image set is keyed in the time of one ``stat`` per file). The stamp of a local
    file is its size and modification time in ns; of an object, its size and ETag, so
    every driver listing the same objects (and a copy of them in another bucket or on
    another endpoint) gets the same key and reuses the same shards."""
    h = hashlib.sha1(f"colecionador-decoded-v{DECODER_VERSION}|{image_size}".encode())
    rows = [
        f"{rel}|{index.classes[label]}|{stamp}"
        for rel, label, stamp in zip(index.relative(), index.labels.tolist(), _stamps(index))
    ]
    for row in rows:  # listing order: a row's id is its position
        h.update(row.encode())
        h.update(b"\n")
    return h.hexdigest()


def decode(
    index: DatasetIndex, image_size: int, on_bad_image: str = "fail", threads: int = 4
) -> DecodedDataset:
    """Decode every image to uint8 (3, S, S). Unreadable files fail or are skipped.
    A local listing only: a remote one is decoded by Ray tasks (training/shards.py)."""
    if index.remote:
        raise ValueError(f"{index.source} is a remote listing: decode it into shards")
    root = index.root.resolve()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda p: decode_or_reason(p, image_size, root), index.paths))
    bad = [
        (str(p.relative_to(index.root)), r)
        for p, r in zip(index.paths, results)
        if isinstance(r, str)
    ]
    check_bad(bad, on_bad_image)
    kept = [(i, r) for i, r in enumerate(results) if not isinstance(r, str)]
    keep = [i for i, _ in kept]
    images = (
        np.stack([r.array for _, r in kept])
        if kept
        else np.zeros((0, 3, image_size, image_size), np.uint8)
    )
    return DecodedDataset(
        images,
        index.labels[keep],
        list(index.classes),
        bad,
        paths=[index.paths[i].relative_to(index.root).as_posix() for i in keep],
        sizes=[r.size for _, r in kept],
        modes=[r.mode for _, r in kept],
        sha1=[r.sha1 for _, r in kept],
        phash=np.array([r.phash for _, r in kept], dtype=np.uint64),
    )


def load(
    root: str | Path, image_size: int, on_bad_image: str, min_per_class: int
) -> DecodedDataset:
    """Discover, decode and check a dataset folder in one call (unreadable images as
    ``on_bad_image`` says, then min_per_class). A job instead decodes, writes its health
    report, then checks, so that a job failed for its data says what is wrong with it."""
    data = decode(discover(root), image_size, on_bad_image)
    check_min_per_class(data.labels, data.classes, min_per_class)
    return data
