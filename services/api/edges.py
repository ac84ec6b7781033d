"""The API's edges: what every response carries and what no request may exceed.

- ``BodyLimit``: a request body over ``max_bytes`` (``upload_bytes`` for the predict
  route's images) is refused with 413 before the app reads it (by its Content-Length,
  or counted as it streams in).
- ``SecurityHeaders``: ``X-Content-Type-Options: nosniff`` on every response;
  ``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` that allows nothing but
  this origin (and the pages' inline style) on our HTML pages. /docs and /redoc load
  Swagger UI and ReDoc from their CDN as FastAPI serves them, so they get no CSP.
- ``docs_routes``: /openapi.json, /docs and /redoc behind the read rule (with a read
  token, they need it too; HTTP Basic works in a browser).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.deps import READ_PAGE
from services.api.markup import root_path

MAX_BODY_BYTES = 1 * 2**20  # a training request is a few KB
MAX_UPLOAD_BYTES = 16 * 2**20  # POST /models/{name}/predict: images
PAGE_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
UNSANDBOXED = ("/docs", "/redoc")


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over ``max_bytes``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        upload_bytes: int = MAX_UPLOAD_BYTES,
    ):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # images to predict on: a larger body than a training request's
        limit = self.upload_bytes if scope["path"].endswith("/predict") else self.max_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._refuse(send, limit)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send, limit)

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps({"detail": f"the request body is over {limit} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        sandboxed = not any(path.endswith(p) for p in UNSANDBOXED)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                html = any(
                    k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers
                )
                if html and sandboxed and b"content-security-policy" not in names:
                    headers += [
                        (b"content-security-policy", PAGE_CSP.encode()),
                        (b"x-frame-options", b"DENY"),
                    ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


docs_routes = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])


@docs_routes.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs_routes.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=f"{root_path(request)}/openapi.json", title="colecionador API"
    )


@docs_routes.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=f"{root_path(request)}/openapi.json", title="colecionador API"
    )
