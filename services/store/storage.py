"""The object store: a local folder (embedded default) or S3 / MinIO through boto3.

Keys are relative (``models/<name>/v<version>/model.pt``, see services/store/artifacts.py for
the layout); ``uri(key)`` gives the full address (``file:///...`` or
``s3://bucket/prefix/...``). Ray Train's run storage lives in the same store. Datasets and
weights named by URI are fetched into a local cache by services/store/fetch.py.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from pydantic import SecretStr

from services.config import Settings
from services.errors import one_line

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import ObjectTypeDef


def read_json(store: Store, key: str) -> Any | None:
    """A JSON document from the store, or None when it is not there or cannot be read
    (an older job, or one that did not get that far)."""
    try:
        return json.loads(store.get_bytes(key))
    except Exception:  # noqa: BLE001 - absent, unreadable or not JSON: no document
        return None


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
            return [base.relative_to(self.root).as_posix()]
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

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


@dataclass(frozen=True)
class S3Access:
    """What a boto3 client for the settings' endpoint needs, and nothing else of the
    settings: the part that travels to Ray tasks reading a data set's objects
    (services/store/fetch.py). The secret stays a SecretStr: its repr never shows it."""

    endpoint: str | None
    region: str
    access_key: str | None
    secret_key: SecretStr | None

    @classmethod
    def of(cls, settings: Settings) -> S3Access:
        return cls(
            settings.s3_endpoint, settings.s3_region, settings.s3_access_key, settings.s3_secret_key
        )

    def client(self) -> S3Client:
        return _client(self)


def s3_client(settings: Settings) -> S3Client:
    return _client(S3Access.of(settings))


def _client(access: S3Access) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=access.endpoint,
        region_name=access.region,
        aws_access_key_id=access.access_key,
        aws_secret_access_key=(access.secret_key.get_secret_value() if access.secret_key else None),
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


_MISSING = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


def error_code(e: BaseException) -> str | None:
    response = getattr(e, "response", None)
    return (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None


def is_missing(e: BaseException) -> bool:
    return error_code(e) in _MISSING


def error_reason(e: BaseException) -> str:
    """A one-line reason for a botocore error: ``Code: message`` plus a hint for 403s."""
    code = error_code(e)
    if code is not None:
        response = getattr(e, "response", {})
        message = response.get("Error", {}).get("Message") or ""
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{code}: {message}" if message and message != code else str(code)
        if code in _DENIED or status == 403:
            text += " (access denied: check the S3 access key and secret key)"
    else:
        text = str(e)
    return one_line(text) if text.strip() else type(e).__name__


def s3_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class S3Store:
    """S3 or MinIO; uploads retry on transient errors (botocore standard retry mode).

    Keys behave like paths, as in :class:`LocalStore`: ``list("a/b")`` and
    ``delete_prefix("a/b")`` touch ``a/b`` and ``a/b/...`` but never ``a/bc``; folder
    marker objects (keys ending in ``/``, which pyarrow and consoles create) are not listed.
    """

    def __init__(self, url: str, settings: Settings):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(f"not an S3 store URL: {url!r} (use s3://bucket[/prefix])")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.settings = settings
        self.client = s3_client(settings)

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist; StoreError if it cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except s3_errors() as e:
            if not is_missing(e):
                where = self.settings.s3_endpoint or "AWS"
                raise StoreError(
                    f"cannot open bucket {self.bucket!r} at {where}: {error_reason(e)}"
                ) from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except s3_errors() as e:
            if error_code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(
                    f"cannot create bucket {self.bucket!r}: {error_reason(e)}"
                ) from None

    def put_bytes(self, key: str, data: bytes) -> str:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)
        except s3_errors() as e:
            raise StoreError(f"upload of {self.uri(key)} failed: {error_reason(e)}") from None
        return self.uri(key)

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except s3_errors() as e:
            if is_missing(e):
                raise StoreError(f"no object {key!r} in {self.url}") from None
            raise StoreError(f"cannot read {self.uri(key)}: {error_reason(e)}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(key))
            return True
        except s3_errors() as e:
            if is_missing(e):
                return False
            raise StoreError(f"cannot check {self.uri(key)}: {error_reason(e)}") from None

    def _keys_under(self, prefix: str) -> list[str]:
        """Full keys of the object named ``prefix`` and of everything below it."""
        rel = prefix.strip("/")
        base = self.key(rel)  # "" or "<store prefix>/" when rel is empty
        try:
            objects = list_objects(self.client, self.bucket, base)
        except s3_errors() as e:
            raise StoreError(f"cannot list {self.uri(rel)}: {error_reason(e)}") from None
        keys = [o["Key"] for o in objects]
        if rel:
            keys = [k for k in keys if k == base or k.startswith(base + "/")]
        return keys

    def list(self, prefix: str) -> list[str]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in self._keys_under(prefix) if not k.endswith("/"))

    def delete_prefix(self, prefix: str) -> None:
        keys = self._keys_under(prefix)  # folder markers too
        for i in range(0, len(keys), 1000):
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
                )
            except s3_errors() as e:
                raise StoreError(f"cannot delete {self.uri(prefix)}: {error_reason(e)}") from None
            failed = response.get("Errors") or []
            if failed:
                first = failed[0]
                raise StoreError(
                    f"cannot delete {len(failed)} object(s) under "
                    f"{self.uri(prefix)}, e.g. {first.get('Key')}: "
                    f"{first.get('Code')}: {first.get('Message')}"
                )

    def ray_storage(self, sub: str) -> tuple[str, Any]:
        """Ray Train's (and Tune's) storage_path and a pyarrow filesystem for this
        endpoint whose secret is never pickled (services/store/node_fs.py): Ray writes
        the filesystem it is given into the store (Tune's tuner.pkl)."""
        from services.store.node_fs import node_s3_filesystem

        s = self.settings
        filesystem = node_s3_filesystem(
            s.s3_endpoint,
            s.s3_region,
            s.s3_access_key,
            s.s3_secret_key.get_secret_value() if s.s3_secret_key else None,
        )
        return f"{self.bucket}/{self.key(sub.strip('/'))}", filesystem


def list_objects(client: S3Client, bucket: str, prefix: str) -> list[ObjectTypeDef]:
    objects: list[ObjectTypeDef] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def open_store(settings: Settings) -> Store:
    url = settings.store
    if url.startswith("s3://"):
        store = S3Store(url, settings)
        store.ensure_bucket()
        return store
    return LocalStore(url[len("file://") :] if url.startswith("file://") else url)
