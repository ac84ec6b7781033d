"""Dataset discovery, decoding and the stratified, seeded train / val / test split.

A dataset is a local folder in ImageFolder layout (``<root>/<class>/<image>``) or a folder
with a ``manifest.csv`` (``path,label`` rows, paths relative to the folder). Images are
decoded once, resized to the training size and kept as one uint8 array (N, 3, H, W), which
is what the workers share: decoding JPEGs every epoch is the usual bottleneck.

The same two layouts listed from an object store (``discover_listing``: keys, sizes and
ETags under a prefix, the manifest's text) give a remote listing: nothing is on this
machine, the decode tasks read each object themselves (training/shards.py, through a
``reader`` the services give) and check it with the same rules (``decode_bytes``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from training.shards import ShardImages

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MANIFEST = "manifest.csv"
MAX_FILE_BYTES = 50 * 2**20  # a larger file is not an image we train on: unreadable
MAX_PIXELS = 40_000_000  # width x height; a header claiming more is a decompression bomb


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


@dataclass(frozen=True)
class _Decoded:
    array: np.ndarray
    size: tuple[int, int]
    mode: str
    sha1: str
    phash: int


class UnreadableImage(ValueError):
    """A file that is not an image we decode: outside the folder, too large, a bomb."""


class ListedFileMissing(RuntimeError):
    """A listed file that is not there where it is decoded: the data set's folder is not
    on this node (or the file went after the listing). Never an unreadable image: a job
    that read its images where they are not must fail, and say where it looked."""

    def __init__(self, path: Path):
        import socket

        super().__init__(
            f"listed file not found on node {socket.gethostname()}: {path} (a local data set "
            "is read on the node that holds its folder; on a cluster, put it in S3)"
        )


def _too_large(n_bytes: int) -> UnreadableImage:
    return UnreadableImage(f"{n_bytes / 2**20:.0f} MB: over the {MAX_FILE_BYTES // 2**20} MB limit")


def decode_bytes(raw: bytes, size: int) -> _Decoded:
    """One file's bytes decoded, resized to (3, size, size) and hashed, with the checks
    every source shares: no more than MAX_FILE_BYTES, no header over MAX_PIXELS."""
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(len(raw))
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


def _decode_one(path: Path, size: int, root: Path) -> _Decoded:
    if root not in path.resolve().parents:
        raise UnreadableImage("outside the dataset folder (a symbolic link?)")
    try:
        n_bytes = path.stat().st_size
    except FileNotFoundError as e:
        raise ListedFileMissing(path) from e
    if n_bytes > MAX_FILE_BYTES:  # before reading it
        raise _too_large(n_bytes)
    return decode_bytes(path.read_bytes(), size)


class ObjectReader(Protocol):
    """How a decode task reads one listed object of a remote listing (the services give
    one: services/store/fetch.py). ``read`` returns the bytes of ``name`` as listed (``etag``),
    at most ``limit + 1`` of them; it raises OSError when that object cannot be read
    (gone, changed since listed, refused: the file is unreadable) and any other error
    when the store itself cannot be reached (the decode fails, nothing is cached)."""

    def read(self, name: str, etag: str, limit: int) -> bytes: ...


def _decode_listed(reader: ObjectReader, name: str, n_bytes: int, etag: str, size: int) -> _Decoded:
    if n_bytes < 0:
        raise FileNotFoundError("not in the data set's listing")
    if n_bytes > MAX_FILE_BYTES:  # from the listing: the object is never fetched
        raise _too_large(n_bytes)
    return decode_bytes(reader.read(name, etag, MAX_FILE_BYTES), size)


_UNREADABLE = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    ValueError,
    SyntaxError,
)


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:200]


def decode_or_reason(path: Path, size: int, root: Path) -> _Decoded | str:
    """One image decoded with every trust check (``root``: the resolved dataset folder),
    or the one-line reason it is unreadable."""
    try:
        return _decode_one(path, size, root)
    except _UNREADABLE as e:
        return _reason(e)


def decode_listed_or_reason(
    reader: ObjectReader, name: str, n_bytes: int, etag: str, size: int
) -> _Decoded | str:
    """One object of a remote listing decoded with the same trust checks (its listed
    size checked before it is read), or the one-line reason it is unreadable."""
    try:
        return _decode_listed(reader, name, n_bytes, etag, size)
    except _UNREADABLE as e:
        return _reason(e)


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
