"""The requests queue's depth, asked of the broker with a passive declare (the AMQP
``queue.declare-ok`` carries the count of ready messages), at most once per ``ttl_s``."""

from __future__ import annotations

import asyncio
import time

from services.metrics.collector import QueueReading

TIMEOUT_S = 2.0  # a broker that does not answer in this long is "down" for the scrape
TTL_S = 5.0  # scrapes closer together than this share one answer


async def ready_messages(url: str, queue: str, timeout: float = TIMEOUT_S) -> int:
    """Messages ready in ``queue`` (0 when it was never declared: nothing was sent).
    Raises when the broker cannot be reached in ``timeout`` s."""
    import aio_pika
    from aio_pika.exceptions import ChannelNotFoundEntity

    connection = await asyncio.wait_for(aio_pika.connect(url, timeout=timeout), timeout)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await asyncio.wait_for(channel.declare_queue(queue, passive=True), timeout)
        except ChannelNotFoundEntity:
            return 0
        return int(declared.declaration_result.message_count or 0)


class QueueProbe:
    """The latest reading of one queue, asked again once it is ``ttl_s`` old; concurrent
    scrapes wait for the one question in flight instead of each opening a connection."""

    def __init__(self, url: str, queue: str, ttl_s: float = TTL_S, timeout: float = TIMEOUT_S):
        self.url, self.queue, self.ttl_s, self.timeout = url, queue, ttl_s, timeout
        self._reading: QueueReading | None = None
        self._at = 0.0
        self._lock: asyncio.Lock | None = None

    async def read(self) -> QueueReading:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._reading is None or time.monotonic() - self._at >= self.ttl_s:
                t0 = time.perf_counter()
                try:
                    ready: int | None = await ready_messages(self.url, self.queue, self.timeout)
                except Exception:  # noqa: BLE001 - the broker is away: said as broker_up 0
                    ready = None
                self._reading = QueueReading(self.queue, ready, time.perf_counter() - t0)
                self._at = time.monotonic()
            return self._reading
