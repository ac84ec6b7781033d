"""The predict decoder under hostile bytes: a file of every format Pillow writes here,
truncated, with bytes flipped or spliced in (Hypothesis, derandomized in the suite), either
decodes to (3, size, size) uint8 or is a BadImage; never another exception, which would
fail the whole ``@serve.batch`` call and every caller batched with it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from training.predict import BadImage, decode_image

FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "ICO", "PPM", "TGA", "PCX", "SGI", "DIB", "IM"]
FORMATS += [
    f for f in ("WEBP", "JPEG2000") if features.check(f.lower().replace("jpeg2000", "jpg_2000"))
]


def _sample(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


SAMPLES = {fmt: _sample(fmt) for fmt in FORMATS}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SAMPLES[draw(st.sampled_from(FORMATS))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "splice", "zero"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "zero":
            data[at : at + draw(st.integers(1, 64))] = bytes(64)[: len(data[at : at + 64])]
    return bytes(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_unharmed(fmt):
    assert decode_image(SAMPLES[fmt], 16).shape == (3, 16, 16)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_files_decode_or_are_a_bad_image(raw):
    try:
        out = decode_image(raw, 16)
    except BadImage as e:
        assert str(e)
        return
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
