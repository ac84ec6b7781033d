"""One image decoded, resized and hashed with the trust checks every source shares: a
local file (inside the data set's folder) or an object of a remote listing read through an
``ObjectReader``; unreadable ones give a one-line reason."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from training.messages import typed_line

MAX_FILE_BYTES = 50 * 2**20  # a larger file is not an image we train on: unreadable
MAX_PIXELS = 40_000_000  # width x height; a header claiming more is a decompression bomb


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
    return typed_line(e, 200)


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
