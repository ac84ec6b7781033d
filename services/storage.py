"""The object store: a local folder (embedded default) or S3 / MinIO through boto3.

Keys are relative (``models/<name>/v<version>/model.pt``); ``uri(key)`` gives the full
address (``file:///...`` or ``s3://bucket/prefix/...``). Datasets and weights named by URI
are fetched into a local cache; Ray Train's run storage lives in the same store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from services.config import Settings


class StoreError(RuntimeError):
    """An object could not be read or written; the message says which and why."""


class Store(Protocol):
    url: str

    def uri(self, key: str) -> str: ...
    def put_bytes(self, key: str, data: bytes) -> str: ...
    def put_file(self, key: str, path: Path) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def ray_storage(self, sub: str) -> tuple[str, Any]: ...


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root not in p.parents and p != self.root:
            raise StoreError(f"key {key!r} leaves the store")
        return p

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def put_bytes(self, key: str, data: bytes) -> str:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, p)  # readers never see half a file
        return self.uri(key)

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        p = self.path(prefix)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

    def ray_storage(self, sub: str) -> tuple[str, Any]:
        path = self.path(sub)
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None


def _s3_client(settings: Settings):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=(settings.s3_secret_key.get_secret_value()
                               if settings.s3_secret_key else None),
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 5, "mode": "standard"}),
    )


class S3Store:
    """S3 or MinIO; uploads retry on transient errors (botocore standard retry mode)."""

    def __init__(self, url: str, settings: Settings):
        parsed = urlparse(url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.url, self.settings = url.rstrip("/"), settings
        self.client = _s3_client(settings)

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"upload of {self.uri(key)} failed: {e}") from None
        return self.uri(key)

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"cannot read {self.uri(key)}: {e}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(key))
            return True
        except ClientError:
            return False

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) + 1:] if self.prefix else k
                for k in _list_keys(self.client, self.bucket, self.key(prefix))]

    def delete_prefix(self, prefix: str) -> None:
        keys = _list_keys(self.client, self.bucket, self.key(prefix))
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]]})

    def ray_storage(self, sub: str) -> tuple[str, Any]:
        """Ray Train's storage_path and a pyarrow S3 filesystem for this endpoint."""
        from pyarrow import fs
        s = self.settings
        endpoint = urlparse(s.s3_endpoint) if s.s3_endpoint else None
        filesystem = fs.S3FileSystem(
            access_key=s.s3_access_key,
            secret_key=s.s3_secret_key.get_secret_value() if s.s3_secret_key else None,
            region=s.s3_region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
            force_virtual_addressing=False)
        return f"{self.bucket}/{self.key(sub)}", filesystem


def _list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def open_store(settings: Settings) -> Store:
    url = settings.store
    if url.startswith("s3://"):
        store = S3Store(url, settings)
        store.ensure_bucket()
        return store
    return LocalStore(url[len("file://"):] if url.startswith("file://") else url)


def local_path(uri: str) -> Path | None:
    """The local path a URI names, or None for a remote one."""
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def fetch_dataset(uri: str, settings: Settings) -> Path:
    """A local folder holding the dataset: the folder itself for a local URI, else a copy
    of ``s3://bucket/prefix/`` in the cache (files already there with the same size are
    not fetched again)."""
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"dataset not found: {uri}")
        return path
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"unsupported dataset URI {uri!r}: use a path or s3://bucket/prefix/")
    client = _s3_client(settings)
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    dest = settings.cache_dir / "datasets" / hashlib.sha1(uri.encode()).hexdigest()[:16]
    try:
        keys = _list_keys(client, parsed.netloc, prefix)
    except Exception as e:  # noqa: BLE001 - botocore raises many kinds
        raise StoreError(f"cannot list {uri}: {e}") from None
    if not keys:
        raise FileNotFoundError(f"dataset not found: no objects under {uri}")
    for key in keys:
        target = dest / key[len(prefix):]
        head = None
        if target.exists():
            head = client.head_object(Bucket=parsed.netloc, Key=key)
            if head["ContentLength"] == target.stat().st_size:
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(parsed.netloc, key, str(target))
    return dest


def fetch_file(uri: str, settings: Settings) -> Path:
    """A local path for one file named by a path, file:// or s3:// URI."""
    path = local_path(uri)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"file not found: {uri}")
        return path
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"unsupported URI {uri!r}")
    dest = settings.cache_dir / "files" / hashlib.sha1(uri.encode()).hexdigest()[:16]
    dest = dest / Path(parsed.path).name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            _s3_client(settings).download_file(parsed.netloc, parsed.path.lstrip("/"), str(dest))
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(f"cannot fetch {uri}: {e}") from None
    return dest
