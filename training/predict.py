"""Prediction for a served model: image bytes decoded exactly as the training data is
(RGB, bilinear resize to the model's side, uint8 (3, S, S)), probabilities through
``training.evaluate.predict_probs`` with model.pt's ``temperature``, and the top-k labels.

Pure: no I/O beyond the bytes it is given (services/registry/serving.py loads model.pt and serves).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from training.data import MAX_FILE_BYTES, MAX_PIXELS
from training.evaluate import predict_probs
from training.model import load_model


class BadImage(ValueError):
    """Bytes that are not an image this model can read; the message says why."""


def decode_image(raw: bytes, size: int) -> np.ndarray:
    """uint8 (3, size, size), as training/data.py decodes a dataset's file (the same
    conversion and resampling, so a served image gets the evaluation's label)."""
    if len(raw) > MAX_FILE_BYTES:
        raise BadImage(f"{len(raw) / 2**20:.0f} MB: over the {MAX_FILE_BYTES // 2**20} MB limit")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"{width}x{height} pixels: over the {MAX_PIXELS:,} limit")
            img.load()
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    except BadImage:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many kinds on bad bytes
        # (OSError, SyntaxError, ValueError, NotImplementedError, struct.error, ...): each is
        # this image's fault, never the batch's
        raise BadImage(f"not a readable image ({type(e).__name__})") from None


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[list[dict[str, Any]]]:
    """Per row of ``probs``, the ``k`` most probable labels, most probable first."""
    k = max(1, min(k, len(classes)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [{"label": classes[j], "probability": float(row[j])} for j in idx]
        for row, idx in zip(probs, order)
    ]


@dataclass(frozen=True)
class Predictor:
    """A loaded model.pt: the model, its classes, input side and temperature."""

    model: nn.Module
    classes: list[str]
    image_size: int
    temperature: float = 1.0

    @classmethod
    def from_package(cls, package: dict[str, Any]) -> Predictor:
        model, package = load_model(package)
        return cls(
            model,
            list(package["classes"]),
            int(package["image_size"]),
            float(package.get("temperature", 1.0)),
        )

    def probs(self, images: np.ndarray) -> np.ndarray:
        return predict_probs(self.model, images, temperature=self.temperature)

    def predict(self, images: np.ndarray, k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k labels with probabilities for uint8 (N, 3, S, S) images."""
        return top_k(self.probs(images), self.classes, k)
