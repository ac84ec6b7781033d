"""RabbitMQ through aio-pika: connect, declare the queues (with a dead-letter queue for
requests), publish with publisher confirms."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

DLX_SUFFIX = ".dlx"
DLQ_SUFFIX = ".dead"


async def connect(url: str, timeout: float = 10.0) -> aio_pika.abc.AbstractRobustConnection:
    return await aio_pika.connect_robust(url, timeout=timeout)


async def declare_requests(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The requests queue, dead-lettering into ``<name>.dead`` through ``<name>.dlx``."""
    dlx = await channel.declare_exchange(
        name + DLX_SUFFIX, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(name + DLQ_SUFFIX, durable=True)
    await dead.bind(dlx)
    return await channel.declare_queue(
        name, durable=True, arguments={"x-dead-letter-exchange": name + DLX_SUFFIX}
    )


async def declare_events(channel: AbstractChannel, name: str) -> AbstractQueue:
    return await channel.declare_queue(name, durable=True)


async def publish_json(
    url: str,
    queue: str,
    body: dict[str, Any],
    *,
    declare: str = "events",
    headers: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> None:
    """Publish one persistent JSON message to ``queue`` on the default exchange and wait
    for the broker's confirm."""
    connection = await aio_pika.connect(url, timeout=timeout)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        if declare == "requests":
            await declare_requests(channel, queue)
        else:
            await declare_events(channel, queue)
        message = aio_pika.Message(
            json.dumps(body, default=str).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
        )
        await asyncio.wait_for(
            channel.default_exchange.publish(message, routing_key=queue), timeout
        )


def publish_json_sync(url: str, queue: str, body: dict[str, Any], **kw: Any) -> None:
    asyncio.run(publish_json(url, queue, body, **kw))


def publish_request(url: str, queue: str, body: dict[str, Any]) -> None:
    """Publish a training request on the requests queue (what ``colecionador submit`` and
    POST /jobs do), declaring the queue and its dead-letter queue as the ingress does."""
    publish_json_sync(url, queue, json.loads(json.dumps(body, default=str)), declare="requests")
