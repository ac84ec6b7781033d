"""Dataset discovery, decoding and the stratified, seeded train / val / test split.

A dataset is a local folder in ImageFolder layout (``<root>/<class>/<image>``) or a folder
with a ``manifest.csv`` (``path,label`` rows, paths relative to the folder). Images are
decoded once, resized to the training size and kept as one uint8 array (N, 3, H, W), which
is what the workers share: decoding JPEGs every epoch is the usual bottleneck.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MANIFEST = "manifest.csv"
MAX_FILE_BYTES = 50 * 2**20  # a larger file is not an image we train on: unreadable
MAX_PIXELS = 40_000_000  # width x height; a header claiming more is a decompression bomb


class DataError(ValueError):
    """The dataset cannot be trained on; the message says why, in one line."""


@dataclass(frozen=True)
class DatasetIndex:
    root: Path
    paths: list[Path]
    labels: np.ndarray  # int64 class index per path
    classes: list[str]

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels.tolist())
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass
class DecodedDataset:
    images: np.ndarray  # uint8 (N, 3, H, W)
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


def _from_manifest(root: Path) -> DatasetIndex:
    with open(root / MANIFEST, newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{root / MANIFEST} must have 'path' and 'label' columns")
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    inside = root.resolve()
    paths = []
    for n, r in enumerate(rows, start=2):  # line 1 is the header
        path = root / r["path"]
        if inside not in path.resolve().parents:
            raise DataError(
                f"{MANIFEST} line {n}: {r['path']!r} is not a file inside the dataset folder"
            )
        paths.append(path)
    labels = np.asarray([index[r["label"]] for r in rows], dtype=np.int64)
    if len(classes) < 2:
        raise DataError(f"dataset {root} has {len(classes)} class; at least 2 are needed")
    return DatasetIndex(root, paths, labels, classes)


@dataclass(frozen=True)
class _Decoded:
    array: np.ndarray
    size: tuple[int, int]
    mode: str
    sha1: str
    phash: int


class UnreadableImage(ValueError):
    """A file that is not an image we decode: outside the folder, too large, a bomb."""


def _decode_one(path: Path, size: int, root: Path) -> _Decoded:
    if root not in path.resolve().parents:
        raise UnreadableImage("outside the dataset folder (a symbolic link?)")
    n_bytes = path.stat().st_size
    if n_bytes > MAX_FILE_BYTES:
        raise UnreadableImage(
            f"{n_bytes / 2**20:.0f} MB: over the {MAX_FILE_BYTES // 2**20} MB limit"
        )
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise UnreadableImage(
                f"{width}x{height} pixels: over the {MAX_PIXELS:,} limit (a decompression bomb?)"
            )
        img.load()
        rgb = img.convert("RGB")
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
        ph = int(str(imagehash.phash(rgb)), 16)
        return _Decoded(
            np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy(),
            img.size,
            img.mode,
            hashlib.sha1(raw).hexdigest(),
            ph,
        )


def decode_or_reason(path: Path, size: int, root: Path) -> _Decoded | str:
    """One image decoded with every trust check (``root``: the resolved dataset folder),
    or the one-line reason it is unreadable."""
    try:
        return _decode_one(path, size, root)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
    ) as e:
        return f"{type(e).__name__}: {e}".splitlines()[0][:200]


DECODER_VERSION = 1  # bump when decoding changes (resize, hash): cached shards are redone


def fingerprint(index: DatasetIndex, image_size: int) -> str:
    """The data set version's key: sha1 of the listing in its order (relative path, class,
    file size, modification time in ns), the image size and the decoder's version. A file
    added, removed, relabelled, reordered or rewritten changes it; no file's bytes are read
    (a 1M-image set is keyed in the time of one ``stat`` per file)."""
    h = hashlib.sha1(f"colecionador-decoded-v{DECODER_VERSION}|{image_size}".encode())
    rows = []
    for p, label in zip(index.paths, index.labels.tolist()):
        try:
            st = p.stat()  # the target of a link: its content is what is decoded
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        rows.append(f"{p.relative_to(index.root).as_posix()}|{index.classes[label]}|{stamp}")
    for row in rows:  # listing order: a row's id is its position
        h.update(row.encode())
        h.update(b"\n")
    return h.hexdigest()


def decode(
    index: DatasetIndex, image_size: int, on_bad_image: str = "fail", threads: int = 4
) -> DecodedDataset:
    """Decode every image to uint8 (3, S, S). Unreadable files fail or are skipped."""

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


def check_bad(bad: list[tuple[str, str]], on_bad_image: str) -> None:
    """``fail``: unreadable images are an error naming them; ``skip``: they are left out."""
    if bad and on_bad_image == "fail":
        first = ", ".join(b[0] for b in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} unreadable image(s): {first}{more} "
            "(set on_bad_image=skip to train without them)"
        )


def check_min_per_class(labels: np.ndarray, classes: list[str], min_per_class: int) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    short = [f"{classes[i]} ({n})" for i, n in enumerate(counts) if n < min_per_class]
    if short:
        raise DataError(f"classes with fewer than {min_per_class} images: {', '.join(short)}")


def _holdout_size(n: int, frac: float, cap: int | None, n_classes: int) -> int:
    size = int(round(n * frac))
    if cap is not None:
        size = min(size, cap)
    return max(size, n_classes)  # stratification needs one per class at least


def split(
    labels: np.ndarray,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    val_max: int | None = None,
    test_max: int | None = None,
    seed: int = 0,
) -> Split:
    """Stratified, seeded split of indices into train / val / test.

    Sizes are ``round(n * frac)``, capped by ``*_max``; every class appears in every part in
    proportion to its size, and the same seed gives the same split.
    """
    from sklearn.model_selection import train_test_split  # here: Ray Data's decode and
    # read workers import this module, and scikit-learn (scipy.stats) costs them ~1.5 s

    labels = np.asarray(labels)
    n = len(labels)
    k = len(np.unique(labels))
    idx = np.arange(n)
    n_test = _holdout_size(n, test_frac, test_max, k)
    rest, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
    n_val = _holdout_size(n, val_frac, val_max, k)
    train, val = train_test_split(
        rest, test_size=n_val, stratify=labels[rest], random_state=seed + 1
    )
    return Split(np.sort(train), np.sort(val), np.sort(test))


def kfold(
    labels: np.ndarray, indices: np.ndarray, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds over ``indices`` (positions into ``labels``): (train, val) pairs."""
    from sklearn.model_selection import StratifiedKFold

    indices = np.asarray(indices)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (np.sort(indices[a]), np.sort(indices[b]))
        for a, b in skf.split(indices, np.asarray(labels)[indices])
    ]


def load(
    root: str | Path, image_size: int, on_bad_image: str, min_per_class: int
) -> DecodedDataset:
    """Discover, decode and check a dataset folder in one call (unreadable images as
    ``on_bad_image`` says, then min_per_class). A job instead decodes, writes its health
    report, then checks, so that a job failed for its data says what is wrong with it."""
    data = decode(discover(root), image_size, on_bad_image)
    check_min_per_class(data.labels, data.classes, min_per_class)
    return data
