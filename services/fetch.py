"""Datasets and weights named by URI, as local paths: a local path is used in place, an
``s3://`` object or prefix is copied into the cache under the home and fetched again only
when it changed (size and ETag)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from services.config import Settings
from services.storage import (
    StoreError,
    error_code,
    error_reason,
    is_missing,
    list_objects,
    s3_client,
    s3_errors,
)


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


def fetch_dataset(uri: str, settings: Settings) -> Path:
    """A local folder holding the dataset: the folder itself for a local URI, else a copy
    of ``s3://bucket/prefix/`` in the cache. Files already there with the same size and
    ETag are not fetched again; files no longer in the bucket are removed from the copy."""
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"dataset not found: {uri}")
        return path
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"unsupported dataset URI {uri!r}: use a path or s3://bucket/prefix/")
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if prefix:
        prefix += "/"
    client = s3_client(settings)
    try:
        objects = list_objects(client, bucket, prefix)
    except s3_errors() as e:
        if error_code(e) == "NoSuchBucket":
            raise FileNotFoundError(f"dataset not found: no bucket {bucket!r} for {uri}") from None
        raise StoreError(f"cannot list {uri}: {error_reason(e)}") from None
    objects = [o for o in objects if not o["Key"].endswith("/")]  # folder markers
    if not objects:
        raise FileNotFoundError(f"dataset not found: no objects under s3://{bucket}/{prefix}")

    name = _cache_name(settings, f"{bucket}/{prefix}")
    dest = settings.cache_dir / "datasets" / name
    manifest_path = settings.cache_dir / "datasets" / f"{name}.json"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    old = _read_manifest(manifest_path)
    manifest: dict[str, str] = {}
    wanted: set[Path] = set()
    try:
        for o in objects:
            rel = o["Key"][len(prefix) :]
            target = (dest / rel).resolve()
            if root not in target.parents:
                raise StoreError(
                    f"refusing object s3://{bucket}/{o['Key']}: its key leaves the dataset folder"
                )
            wanted.add(target)
            etag = str(o.get("ETag", ""))
            if target.is_file() and target.stat().st_size == o["Size"] and old.get(rel) == etag:
                manifest[rel] = etag
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(bucket, o["Key"], str(target))
            except s3_errors() as e:
                raise StoreError(
                    f"cannot download s3://{bucket}/{o['Key']}: {error_reason(e)}"
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
