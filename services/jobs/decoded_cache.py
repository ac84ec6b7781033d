"""Decode once per data set version: the decoded shards in the store, reused when there.

A data set version is its listing's fingerprint (training.data.fingerprint: paths, classes,
sizes, modification times of local files or ETags of objects, the image size and the
decoder's version): every driver listing the same objects keys them alike. A remote
listing (an S3 prefix, services/store/fetch.py) is decoded by tasks that read the objects from
the bucket themselves (``object_reader``); nothing is downloaded to the driver. Its shards live at
``cache/decoded/<hash>-<size>/`` (services/store/artifacts.py): each decode writes into a fresh
``<attempt>/`` folder, and the set becomes usable only when ``manifest.json`` naming that
folder's shards is written, last. A half-written set has no manifest (or a manifest that
names another, complete attempt), so it is never reused; every job, retry, tuning trial
and later job on the same data reads the shards and never decodes a JPEG again.

Attempts that will never be used are removed: a decode that fails removes its own folder,
and a decode that completes removes the other attempts started more than
``STALE_ATTEMPT_S`` before it (a driver killed half-way, or a set replaced by a newer
complete one). The grace leaves alone a decode of the same data still running beside this
one, and a job still reading the set this one's manifest replaced.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from services.config import Settings
from services.jobs.ray_jobs import init_ray
from services.store.artifacts import decoded_manifest_key, decoded_prefix
from services.store.fetch import object_reader
from services.store.storage import Store, StoreError, read_json
from training.data import DatasetIndex, fingerprint
from training.shards import ShardSet, decode_to_shards

STALE_ATTEMPT_S = 24 * 3600


def _reuse(
    store: Store, index: DatasetIndex, image_size: int, key: str, base: str, filesystem: Any
) -> ShardSet | None:
    manifest = read_json(store, decoded_manifest_key(key, image_size))
    if not isinstance(manifest, dict) or manifest.get("fingerprint") != key:
        return None
    try:
        files = [f"{base}/{name}" for name in manifest["files"]]
        shards = ShardSet.read(files, filesystem, image_size)
    except Exception:  # noqa: BLE001 - a shard gone or unreadable: decode again
        return None
    return shards if shards.matches(index) else None


def shard_set(
    index: DatasetIndex,
    image_size: int,
    settings: Settings,
    store: Store,
    say: Callable[[str], None] = lambda _m: None,
) -> tuple[ShardSet, bool]:
    """The decoded shards of ``index`` at ``image_size``: (shards, reused)."""
    key = fingerprint(index, image_size)
    base, filesystem = store.ray_storage(decoded_prefix(key, image_size))
    base = base.rstrip("/")
    shards = _reuse(store, index, image_size, key, base, filesystem)
    if shards is not None:
        say(f"decoded shards reused: {decoded_prefix(key, image_size)} ({len(shards)} files)")
        return shards, True
    init_ray(settings)
    started = time.time()
    attempt = f"{int(started)}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        reader = object_reader(index, settings) if index.remote else None
        files = decode_to_shards(index, image_size, f"{base}/{attempt}", filesystem, reader=reader)
        shards = ShardSet.read(files, filesystem, image_size)
    except BaseException as e:
        _remove(store, f"{decoded_prefix(key, image_size)}/{attempt}")
        reason = _store_error_in(e)
        if reason is not None:
            raise StoreError(reason) from e
        raise
    manifest = {
        "fingerprint": key,
        "image_size": image_size,
        "rows": len(shards),
        "unreadable": int((shards.meta["error"] != "").sum()),
        "classes": list(index.classes),
        "files": [f[len(base) + 1 :] for f in files],
        "written_at": time.time(),
    }
    store.put_bytes(decoded_manifest_key(key, image_size), json.dumps(manifest).encode())
    prune_attempts(store, decoded_prefix(key, image_size), attempt, started - STALE_ATTEMPT_S)
    say(
        f"decoded {len(shards)} files into {len(files)} shard(s) in "
        f"{time.perf_counter() - t0:.1f} s: {decoded_prefix(key, image_size)}"
    )
    return shards, False


def _store_error_in(e: BaseException) -> str | None:
    """The reason of a StoreError raised in a decode task (an object store that could not
    be reached), which Ray Data passes on only as the text of its task error."""
    if isinstance(e, StoreError):
        return str(e)
    found = re.findall(r"^(?:services\.store\.storage\.)?StoreError: (.+)$", str(e), re.MULTILINE)
    return found[-1] if found else None


def _remove(store: Store, prefix: str) -> None:
    try:
        store.delete_prefix(prefix)
    except Exception:  # noqa: BLE001 - a leftover, found again by the next complete decode
        pass


def prune_attempts(store: Store, prefix: str, keep: str, before: float) -> list[str]:
    """Remove the attempt folders under ``prefix`` (``<unix seconds>-<id>/``) other than
    ``keep`` that started before ``before``; returns the ones removed."""
    attempts = {
        k[len(prefix) + 1 :].split("/", 1)[0]
        for k in store.list(prefix)
        if "/" in k[len(prefix) + 1 :]
    }
    removed = []
    for a in sorted(attempts - {keep}):
        started = a.split("-", 1)[0]
        if started.isdigit() and int(started) < before:
            _remove(store, f"{prefix}/{a}")
            removed.append(a)
    return removed
