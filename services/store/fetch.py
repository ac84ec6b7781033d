"""Datasets and weights named by URI: listed, read in place, or copied into the cache.

``dataset_index`` is the listing a job decodes. A local folder is listed in place. An
``s3://bucket/prefix/`` is listed without downloading anything (``list_dataset``: the
objects' keys, sizes and ETags, and the ``manifest.csv`` object when there is one); a
large set (``settings.stream_min_images`` files or more) stays in the bucket, and the Ray
Data tasks that decode it read each object themselves through an ``S3ObjectReader``, on
whatever node they run: the driver's disk never holds it. A small set is copied into the
cache under the home (``fetch_dataset``, fetched again only when it changed: size and
ETag) and decoded in memory there, which is faster for it.

``fetch_file`` is the same cache for one object (weights named by URI).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from services.config import Settings
from services.store.storage import (
    S3Access,
    StoreError,
    error_code,
    error_reason,
    is_missing,
    s3_client,
    s3_errors,
)
from training.data import MANIFEST, DatasetIndex, discover, discover_listing

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import ObjectTypeDef


def local_path(uri: str) -> Path | None:
    """The local path a URI names, or None for a remote one."""
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def _cache_name(settings: Settings, what: str) -> str:
    """The same object on another endpoint is another object."""
    return hashlib.sha1(f"{settings.s3_endpoint or ''}|{what}".encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(path: Path, manifest: dict[str, str]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.part")
    tmp.write_text(json.dumps(manifest, sort_keys=True))
    os.replace(tmp, path)


def _bucket_prefix(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"unsupported dataset URI {uri!r}: use a path or s3://bucket/prefix/")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def _list_s3(
    uri: str, settings: Settings, row: Callable[[ObjectTypeDef], Any] = lambda o: o
) -> tuple[str, str, list[Any], Any]:
    """(bucket, prefix, ``row`` of each object under it but folder markers, the client).
    ``row`` keeps what is needed of each object as its page arrives: boto3's dict of an
    object is ~1 KB, a million of them a gigabyte on the driver."""
    bucket, prefix = _bucket_prefix(uri)
    client = s3_client(settings)
    objects = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            objects += [row(o) for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except s3_errors() as e:
        if error_code(e) == "NoSuchBucket":
            raise FileNotFoundError(f"dataset not found: no bucket {bucket!r} for {uri}") from None
        raise StoreError(f"cannot list {uri}: {error_reason(e)}") from None
    if not objects:
        raise FileNotFoundError(f"dataset not found: no objects under s3://{bucket}/{prefix}")
    return bucket, prefix, objects, client


Listed = tuple[str, str, list[tuple[str, int, str]], Any]  # bucket, prefix, rows, client


def _listed(uri: str, settings: Settings) -> Listed:
    """The objects under an ``s3://`` prefix as (name under the prefix, size, ETag)."""
    cut = len(_bucket_prefix(uri)[1])
    return _list_s3(
        uri, settings, lambda o: (o["Key"][cut:], int(o["Size"]), str(o.get("ETag", "")))
    )


def _index_of(listed: Listed) -> DatasetIndex:
    """training.data.discover_listing of a listing (the manifest object is the one read)."""
    bucket, prefix, rows, client = listed
    manifest = None
    if any(rel == MANIFEST for rel, _, _ in rows):
        try:
            body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"]
            manifest = body.read().decode("utf-8")
        except s3_errors() as e:
            raise StoreError(
                f"cannot read s3://{bucket}/{prefix}{MANIFEST}: {error_reason(e)}"
            ) from None
    return discover_listing(f"s3://{bucket}/{prefix}", rows, manifest)


def list_dataset(uri: str, settings: Settings) -> DatasetIndex:
    """The listing of the data set a URI names, nothing downloaded: ``discover`` of a
    local folder, or the remote listing of an ``s3://`` prefix."""
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"dataset not found: {uri}")
        return discover(path)
    return _index_of(_listed(uri, settings))


def dataset_index(uri: str, settings: Settings, image_size: int | None = None) -> DatasetIndex:
    """The listing a job decodes. A remote set that is streamed (``settings.streams``:
    from ``stream_min_images`` files, or over the decode budget at ``image_size``) stays
    remote (decoded into shards by tasks reading the bucket); a smaller one is copied into
    the cache first and listed there, for the in-memory decode that is faster at that
    size. The choice is made from the listing, before any object is downloaded, and the
    copy works from that same listing (the bucket is listed once)."""
    if local_path(uri) is not None:
        return list_dataset(uri, settings)
    listed = _listed(uri, settings)
    index = _index_of(listed)
    if not settings.streams(len(index), image_size):
        return discover(_copy(listed, settings))
    return index


_CLIENT_LOCK = threading.Lock()  # boto3's default session is not thread-safe


@dataclass
class S3ObjectReader:
    """training.data.ObjectReader for a remote listing under ``s3://bucket/prefix``: what
    a decode task, on any node, reads the listed objects with. It travels pickled in the
    task's arguments (endpoint and keys: ``S3Access``, its secret a SecretStr that no repr
    shows); each worker process makes its boto3 client once.

    Each object is read as listed (``If-Match`` its ETag), so shards keyed by the listing
    hold the bytes it names. An object gone, changed since it was listed or refused is an
    unreadable file (OSError, its row's ``error``); a store that cannot be reached fails
    the decode (StoreError: nothing is cached, the job fails and says why)."""

    access: S3Access
    bucket: str
    prefix: str
    _client: S3Client | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def client(self) -> S3Client:
        with _CLIENT_LOCK:
            if self._client is None:
                self._client = self.access.client()
            return self._client

    def read(self, name: str, etag: str, limit: int) -> bytes:
        key = self.prefix + name
        extra: dict[str, Any] = {"IfMatch": etag} if etag else {}
        try:
            body = self.client().get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
            try:
                return body.read(limit + 1)
            finally:
                body.close()
        except s3_errors() as e:
            code = error_code(e)
            if code in ("PreconditionFailed", "412"):
                raise OSError("changed since the data set was listed") from None
            if is_missing(e):
                raise FileNotFoundError("no longer in the bucket") from None
            if code in ("AccessDenied", "Forbidden", "403"):
                raise PermissionError(f"reading it was refused ({code})") from None
            raise StoreError(f"cannot read s3://{self.bucket}/{key}: {error_reason(e)}") from None


def object_reader(index: DatasetIndex, settings: Settings) -> S3ObjectReader:
    """The reader of a remote listing's objects (``index.source``: s3://bucket/prefix/)."""
    if index.source is None:
        raise ValueError("a local listing is read from its folder")
    bucket, prefix = _bucket_prefix(index.source)
    return S3ObjectReader(S3Access.of(settings), bucket, prefix)


def fetch_dataset(uri: str, settings: Settings) -> Path:
    """A local folder holding the dataset: the folder itself for a local URI, else a copy
    of ``s3://bucket/prefix/`` in the cache (``_copy``)."""
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"dataset not found: {uri}")
        return path
    return _copy(_listed(uri, settings), settings)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` (flock: every process and thread on the node that
    copies into the same cache folder waits for the one copying now)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _copy(listed: Listed, settings: Settings) -> Path:
    """The listed objects copied into the cache. Files already there with the same size
    and ETag are not fetched again; files no longer listed are removed from the copy. One
    copier at a time per folder: two jobs on the same set once deleted each other's
    half-downloaded files while pruning."""
    bucket, prefix, _rows, _client = listed
    name = _cache_name(settings, f"{bucket}/{prefix}")
    with _exclusive(settings.cache_dir / "datasets" / f"{name}.lock"):
        return _copy_into(listed, settings, name)


def _copy_into(listed: Listed, settings: Settings, name: str) -> Path:
    """``_copy``'s work, under its lock, into the cache folder ``name``."""
    bucket, prefix, rows, client = listed
    dest = settings.cache_dir / "datasets" / name
    manifest_path = settings.cache_dir / "datasets" / f"{name}.json"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    old = _read_manifest(manifest_path)
    manifest: dict[str, str] = {}
    wanted: set[Path] = set()
    try:
        for rel, size, etag in rows:
            target = (dest / rel).resolve()
            if root not in target.parents:
                raise StoreError(
                    f"refusing object s3://{bucket}/{prefix}{rel}: its key leaves the "
                    "dataset folder"
                )
            wanted.add(target)
            if target.is_file() and target.stat().st_size == size and old.get(rel) == etag:
                manifest[rel] = etag
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(bucket, prefix + rel, str(target))
            except s3_errors() as e:
                raise StoreError(
                    f"cannot download s3://{bucket}/{prefix}{rel}: {error_reason(e)}"
                ) from None
            manifest[rel] = etag
    finally:
        _write_manifest(manifest_path, manifest)
    for p in sorted(root.rglob("*"), reverse=True):  # the copy holds what the bucket holds
        if p.is_file() and p not in wanted:
            p.unlink(missing_ok=True)
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return dest


def fetch_file(uri: str, settings: Settings) -> Path:
    """A local path for one file named by a path, file:// or s3:// URI (an S3 object is
    cached and fetched again only when its ETag changes)."""
    path = local_path(uri)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"file not found: {uri}")
        return path
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not bucket or not key or key.endswith("/"):
        raise ValueError(f"unsupported URI {uri!r}: use a path or s3://bucket/key")
    folder = settings.cache_dir / "files" / _cache_name(settings, f"{bucket}/{key}")
    dest = folder / PurePosixPath(key).name
    etag_file = folder / ".etag"
    client = s3_client(settings)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except s3_errors() as e:
        if is_missing(e):
            raise FileNotFoundError(f"file not found: {uri}") from None
        raise StoreError(f"cannot fetch {uri}: {error_reason(e)}") from None
    etag = str(head.get("ETag", ""))
    with _exclusive(folder.with_name(folder.name + ".lock")):  # one download at a time
        if (
            dest.is_file()
            and dest.stat().st_size == head.get("ContentLength")
            and etag_file.is_file()
            and etag_file.read_text() == etag
        ):
            return dest
        folder.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, key, str(dest))
        except s3_errors() as e:
            if is_missing(e):
                raise FileNotFoundError(f"file not found: {uri}") from None
            raise StoreError(f"cannot fetch {uri}: {error_reason(e)}") from None
        etag_file.write_text(etag)
        return dest


def list_prefix(uri: str, settings: Settings) -> list[tuple[str, int, str]]:
    """Every object under an ``s3://bucket/prefix/`` as (name under the prefix, size,
    ETag), nothing downloaded (FileNotFoundError when there is none)."""
    return _listed(uri, settings)[2]


def prefix_reader(uri: str, settings: Settings) -> S3ObjectReader:
    """The reader of the objects under an ``s3://bucket/prefix/``, as listed."""
    bucket, prefix = _bucket_prefix(uri)
    return S3ObjectReader(S3Access.of(settings), bucket, prefix)


def put_file_at(folder_uri: str, name: str, path: Path, settings: Settings) -> str:
    """The file ``path`` written as ``name`` in the folder a path, file:// or s3:// URI
    names (a local file appears whole or not at all); returns the file's URI."""
    folder = local_path(folder_uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
        tmp.write_bytes(Path(path).read_bytes())
        os.replace(tmp, folder / name)
        return (folder / name).resolve().as_uri()
    bucket, prefix = _bucket_prefix(folder_uri)
    try:
        s3_client(settings).upload_file(str(path), bucket, prefix + name)
    except s3_errors() as e:
        raise StoreError(f"cannot write s3://{bucket}/{prefix}{name}: {error_reason(e)}") from None
    return f"s3://{bucket}/{prefix}{name}"
