"""Conditional GETs: an ``ETag`` on every successful read, and ``304 Not Modified`` when the
client already holds that representation (``If-None-Match``).

A pure ASGI middleware (not ``@app.middleware("http")``, whose BaseHTTPMiddleware wraps
every response in a stream and a task): for a GET answered 200 it buffers the body
(the API's reads are small JSON, pages and PNGs, never streamed), hashes it, and adds
``ETag: "<hash>"`` and, unless the route set one, ``Cache-Control: no-cache`` (store it,
but ask again each time: a polling dashboard or the status page's refresh gets a 304 and
an empty body while nothing changed, and the new data as soon as it does). Other methods
and statuses pass through untouched.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CACHE_CONTROL = b"no-cache"
# what a 304 repeats of the 200 it stands for (RFC 9110 15.4.5)
_KEPT_ON_304 = {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}


def etag_of(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def matches(if_none_match: bytes, etag: bytes) -> bool:
    """``If-None-Match`` (a list, weak validators, or ``*``) against a strong ETag, by the
    weak comparison RFC 9110 asks for in this header."""
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


class ConditionalGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] != 200:  # errors, redirects: as they are
                    start = None
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._answer(start, b"".join(chunks), if_none_match, send)

        await self.app(scope, receive, capture)

    @staticmethod
    async def _answer(start: Message, body: bytes, if_none_match: bytes | None, send: Send) -> None:
        headers: list[Any] = list(start.get("headers", []))
        names = {k.lower() for k, _ in headers}
        etag = next((v for k, v in headers if k.lower() == b"etag"), None)
        if etag is None:
            etag = etag_of(body)
            headers.append((b"etag", etag))
        if b"cache-control" not in names:
            headers.append((b"cache-control", DEFAULT_CACHE_CONTROL))
        if if_none_match is not None and matches(if_none_match, etag):
            kept = [(k, v) for k, v in headers if k.lower() in _KEPT_ON_304]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
