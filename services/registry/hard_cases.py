"""Keeping production's hard cases (services/registry/hard_case_rules.py says which), off
the request path: a replica's answer hands each image it keeps to ``HardCaseKeeper.offer``,
which only puts it on a bounded queue (full: the sample is dropped and counted, the answer
is not touched); one thread per replica writes them into the store and keeps the pool
within its bounds and retention. A store that is away loses the sample (counted,
``dropped`` ``store``), never the answer.

The pool, ``hard_cases/<model>/<UTC time>-<id>/`` (services/store/artifacts.py): the image
as it was sent (``image.<ext>``, or re-encoded as PNG when Pillow names no extension the
data lister reads) and ``prediction.json``, written last. Several replicas write into the
same pool; each prunes what it lists, so the bounds hold to within the other replicas'
writes since its last listing.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import queue
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.config import Settings
from services.errors import one_line
from services.metrics import process as metrics
from services.registry.hard_case_rules import (
    LOW_WATER,
    HardCases,
    keep_reason,
    sample_name,
    samples_of,
    to_prune,
)
from services.store.artifacts import (
    HARD_CASE_IMAGE,
    HARD_CASE_RECORD,
    hard_case_prefix,
    hard_cases_prefix,
)
from services.store.fetch import list_prefix, local_path
from services.store.storage import Store, open_store

log = logging.getLogger("colecionador.hard_cases")

PRUNE_S = 300.0  # an idle keeper prunes (the retention) this often
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}
EXTENSIONS["TIFF"] = ".tif"


@dataclass(frozen=True)
class Offered:
    """One answered image to keep, and its answer."""

    image: bytes
    reason: str
    confidence: float
    predictions: list[dict[str, Any]]
    version: int
    alias: str | None
    when: datetime


def image_file(raw: bytes) -> tuple[str, bytes]:
    """The image's file name in its sample folder and its bytes: as sent when Pillow
    knows its format by an extension the data lister reads, else re-encoded as PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        ext = EXTENSIONS.get(str(img.format))
        if ext is not None:
            return HARD_CASE_IMAGE + ext, raw
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG")
    return HARD_CASE_IMAGE + ".png", out.getvalue()


def pool_objects(store: Store, settings: Settings, prefix: str) -> list[tuple[str, int]]:
    """Every object under ``prefix`` as (path under it, bytes): none when it is empty."""
    uri = store.uri(prefix)
    root = local_path(uri)
    if root is not None:
        if not root.is_dir():
            return []
        files = [p for p in root.rglob("*") if p.is_file()]
        return [(p.relative_to(root).as_posix(), p.stat().st_size) for p in files]
    try:
        return [(name, size) for name, size, _etag in list_prefix(uri, settings)]
    except FileNotFoundError:
        return []


class HardCaseKeeper:
    """One replica's keeper of the model's hard cases: ``consider`` on the request path,
    a writer thread behind it. ``counts``: kept, dropped by why, pruned."""

    def __init__(
        self,
        settings: Settings,
        model_name: str,
        config: HardCases,
        *,
        open_pool: Callable[[], Store] | None = None,
        draw: Callable[[], float] = random.random,
        prune_s: float = PRUNE_S,
    ):
        self.settings, self.model_name, self.config = settings, model_name, config
        self.prefix = hard_cases_prefix(model_name)
        self._open = open_pool or (lambda: open_store(settings))
        self._draw, self._prune_s = draw, prune_s
        self._store: Store | None = None
        self._room: tuple[int, int] | None = None  # (samples, bytes) left before a prune
        self.counts: Counter[str] = Counter()
        self._queue: queue.Queue[Offered | None] = queue.Queue(maxsize=config.queue)
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="hard-cases", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- the request path
    def consider(
        self,
        images: list[bytes],
        confidences: list[float],
        predictions: list[list[dict[str, Any]]],
        version: int,
        alias: str | None,
    ) -> None:
        """Each answered image the rules keep, offered to the writer; never blocks."""
        now = datetime.now(UTC)
        for raw, conf, top in zip(images, confidences, predictions):
            reason = keep_reason(conf, self.config, self._draw())
            if reason is not None:
                self.offer(Offered(raw, reason, conf, top, version, alias, now))

    def offer(self, sample: Offered) -> None:
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            self._count("dropped", "queue_full")

    # ------------------------------------------------------------- the writer
    def _count(self, outcome: str, reason: str, n: int = 1) -> None:
        self.counts[outcome if outcome == "kept" else f"{outcome}:{reason}"] += n
        metrics.hard_cases(self.model_name, outcome, reason, n)

    def _run(self) -> None:
        while True:
            try:
                sample = self._queue.get(timeout=self._prune_s)
            except queue.Empty:
                self._guarded(lambda: self._prune(0, 1.0))  # the retention, when idle
                continue
            try:
                if sample is None:
                    return
                self._guarded(functools.partial(self._write, sample), sample)
            finally:
                self._queue.task_done()
                with self._done:
                    self._done.notify_all()

    def _guarded(self, step: Callable[[], None], sample: Offered | None = None) -> None:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - a store away loses the sample, counted
            self._store, self._room = None, None  # opened and listed afresh next time
            if sample is not None:
                self._count("dropped", "store")
            log.warning("%s: hard case not kept: %s", self.model_name, one_line(e))

    def _pool(self) -> Store:
        if self._store is None:
            self._store = self._open()
        return self._store

    def _write(self, s: Offered) -> None:
        name, image = image_file(s.image)
        record = {
            "model_name": self.model_name,
            "alias": s.alias,
            "version": s.version,
            "reason": s.reason,
            "confidence": s.confidence,
            "predictions": s.predictions,
            "time": s.when.isoformat(),
            "image": name,
            "image_bytes": len(image),
            "rules": self.config.model_dump(),
        }
        body = json.dumps(record, indent=1).encode()
        size = len(image) + len(body)
        if size > self.config.max_bytes:
            self._count("dropped", "too_large")
            return
        if self._room is None or self._room[0] < 1 or self._room[1] < size:
            self._prune(size, LOW_WATER)
        folder = hard_case_prefix(self.model_name, sample_name(s.when, uuid.uuid4().hex[:8]))
        store = self._pool()
        store.put_bytes(folder + name, image)
        store.put_bytes(folder + HARD_CASE_RECORD, body)  # last: the sample is whole
        assert self._room is not None  # set by _prune
        self._room = (self._room[0] - 1, self._room[1] - size)
        self._count("kept", s.reason)

    def _prune(self, incoming: int, fill: float) -> None:
        """List the pool, delete what the rules say, and note the room left."""
        store = self._pool()
        samples = samples_of(pool_objects(store, self.settings, self.prefix))
        gone = to_prune(samples, self.config, datetime.now(UTC), fill, incoming)
        for g in gone:
            store.delete_prefix(hard_case_prefix(self.model_name, g.name))
        if gone:
            self._count("pruned", "bounds", len(gone))
        left = {g.name for g in gone}
        kept = [s for s in samples if s.name not in left]
        self._room = (
            self.config.max_count - len(kept),
            self.config.max_bytes - sum(s.size for s in kept),
        )

    # ------------------------------------------------------------- the replica's
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every offered sample is written or dropped; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout_s)

    def status(self) -> dict[str, Any]:
        return {**self.config.model_dump(), "pending": self._queue.qsize(), **self.counts}

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # a daemon thread: gone with the process
