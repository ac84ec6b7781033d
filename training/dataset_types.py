"""The typed objects of a data set: its listing (``DatasetIndex``), its decoded images
(``DecodedDataset``), its train / val / test ``Split``, and ``DataError``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.shard_reader import ShardImages


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MANIFEST = "manifest.csv"


class DataError(ValueError):
    """The dataset cannot be trained on; the message says why, in one line."""


@dataclass(frozen=True)
class DatasetIndex:
    """A data set's listing, in order: each file's class, and where it is.

    Local (``source`` None): ``paths`` are the files under the folder ``root``. Remote
    (``source``: the prefix's URI, e.g. ``s3://bucket/prefix/``): nothing is local,
    ``paths`` is empty and each file is ``names[i]`` (its key relative to the prefix,
    exactly), ``sizes[i]`` bytes (-1: not in the listing, a manifest row naming nothing)
    and ``etags[i]`` (its content's identity in the store)."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # int64 class index per path
    classes: list[str]
    source: str | None = None
    names: list[str] | None = None
    sizes: list[int] | None = None
    etags: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def remote(self) -> bool:
        return self.source is not None

    def relative(self) -> list[str]:
        """Each file's path relative to the data set (what reports and shards name)."""
        if self.names is not None:
            return list(self.names)
        return [p.relative_to(self.root).as_posix() for p in self.paths]

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels.tolist())
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass
class DecodedDataset:
    images: np.ndarray | ShardImages  # uint8 (N, 3, H, W); lazy when read from shards
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    # per kept image, for the health report and the error report
    paths: list[str] = field(default_factory=list)  # relative to the dataset root
    sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)
    modes: list[str] = field(default_factory=list)  # original PIL mode: L, RGB, RGBA, P...
    sha1: list[str] = field(default_factory=list)  # of the file's bytes
    phash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # 64-bit pHash

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
