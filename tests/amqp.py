"""Reading RabbitMQ queues in tests: wait for a message (no sleeps), delete queues."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika

from tests.conftest import AMQP_URL


async def _next_message(queue: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        try:  # as declared, whatever its arguments (a requests queue has a dead-letter one)
            ch = await conn.channel()
            q = await ch.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:  # not there yet: wait for it
            ch = await conn.channel()
            q = await ch.declare_queue(queue, durable=True)
        async with q.iterator() as it:
            msg = await asyncio.wait_for(it.__anext__(), timeout)
            await msg.ack()
            return json.loads(msg.body), dict(msg.headers or {})


def next_message(queue: str, timeout: float = 10.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next message on ``queue`` (body, headers), waiting up to ``timeout`` seconds."""
    return asyncio.run(_next_message(queue, timeout))


def message_count(queue: str) -> int:
    async def count() -> int:
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(queue, passive=True)
            return q.declaration_result.message_count

    return asyncio.run(count())


def delete_queues(*names: str) -> None:
    async def drop() -> None:
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            for n in names:
                await ch.queue_delete(n)

    try:
        asyncio.run(drop())
    except Exception:  # noqa: BLE001 - a queue may never have been declared
        pass
