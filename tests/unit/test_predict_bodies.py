"""Predict under hostile multipart bodies, through the real app (no model behind it: a
body that parses reaches the model lookup and answers 404 'not served'). Bounds are
enforced while the body streams in: too many parts is a 422 naming the bound."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.api import create_app
from services.api.routes.predict import MAX_FIELDS, MAX_IMAGES
from services.config import Settings

BOUNDARY = "xYzZy"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _form(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    return b"".join(out) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(Settings(home=tmp_path)))


def _post(client, body: bytes):
    return client.post(
        "/models/m/predict",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def test_twenty_thousand_empty_parts_are_refused_at_the_bound(client):
    body = _form([("f", None, b"")] * 20_000)  # 1.3 MB of parts, no image
    r = _post(client, body)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "images"] and f"{MAX_FIELDS}" in error["msg"]


def test_more_files_than_a_request_may_hold_are_refused(client):
    r = _post(client, _form([("images", f"{i}.png", _png()) for i in range(MAX_IMAGES + 1)]))
    assert r.status_code == 422 and f"{MAX_IMAGES}" in r.json()["detail"][0]["msg"]


def test_a_field_over_its_size_is_refused(client):
    r = _post(client, _form([("note", None, b"x" * 2**17), ("images", "a.png", _png())]))
    assert r.status_code == 422 and "exceeded" in r.json()["detail"][0]["msg"]


def test_a_form_within_the_bounds_reaches_the_model(client):
    parts = [("images", f"{i}.png", _png()) for i in range(MAX_IMAGES)] + [("k", None, b"3")]
    r = _post(client, _form(parts))
    assert r.status_code == 404 and "not served" in r.json()["detail"]
    assert _post(client, _form([("k", None, b"3")])).json()["detail"][0]["msg"] == (
        "no image files in the form"
    )
    assert _post(client, b"not a form at all").status_code == 422


def test_the_upload_limit_is_the_operators(tmp_path):
    small = TestClient(create_app(Settings(home=tmp_path, api_upload_mb=0.01)))  # 10 KB
    r = _post(small, _form([("images", "a.png", b"x" * 20_000)]))
    assert r.status_code == 413 and "10485 bytes" in r.json()["detail"]
