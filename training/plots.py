"""Training curves and the confusion matrix as PNG bytes (matplotlib, no display)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi, tight); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_png(rows: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """Loss, accuracy and lr per epoch; a dotted line where phase 2 starts."""
    return png_bytes(curves_figure(rows, title))


def curves_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """The figure of curves_png; constrained layout keeps the title (suptitle) above the
    three plots' own titles."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), layout="constrained")
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes[:2], ("loss", "accuracy")):
        ax.plot(epochs, [r[key] for r in rows], "o-", label=f"train {key}")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "s-", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    axes[2].plot(epochs, [r["lr"] for r in rows], "o-")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("epoch")
    starts = [r["epoch"] for r in rows if r["phase"] == 2]
    if starts and len(starts) < len(rows):
        for ax in axes:
            ax.axvline(min(starts) - 0.5, color="grey", linestyle=":")
    if title:
        fig.suptitle(title)
    return fig


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = ""
) -> bytes:
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(r) for r in matrix), default=0)
    for i in range(n):
        for j in range(n):
            v = matrix[i][j]
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                color="white" if v > peak / 2 else "black",
                fontsize=8,
            )
    ax.set_title(title or "confusion matrix")
    return png_bytes(fig)


def reliability_png(calibration: dict[str, Any], title: str = "") -> bytes:
    """The reliability diagram before and after temperature scaling (training/calibration.py's
    report): per confidence bin the accuracy as a bar, the gap to the diagonal shaded, the
    share of images per bin underneath, ECE in each panel's title."""
    fig, axes = plt.subplots(
        2,
        2,
        figsize=(9, 5.4),
        height_ratios=(3, 1),
        sharex=True,
        layout="constrained",
    )
    t = calibration["temperature"]
    panels = (
        ("bins_before", "ece_before", "before (T = 1)"),
        ("bins_after", "ece_after", f"after temperature scaling (T = {t:.3g})"),
    )
    for col, (bins_key, ece_key, label) in enumerate(panels):
        bins = calibration[bins_key]
        width = bins[0]["upper"] - bins[0]["lower"]
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        acc = [b["accuracy"] or 0.0 for b in bins]
        conf = [b["confidence"] if b["count"] else c for b, c in zip(bins, centres)]
        ax, under = axes[0, col], axes[1, col]
        ax.bar(centres, acc, width=width, edgecolor="#1d3557", color="#457b9d", label="accuracy")
        ax.bar(
            centres,
            [c - a if b["count"] else 0 for c, a, b in zip(conf, acc, bins)],
            bottom=acc,
            width=width,
            color="#e63946",
            alpha=0.35,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}: ECE {calibration[ece_key]:.4f}")
        ax.legend(loc="upper left", fontsize=8)
        n = sum(b["count"] for b in bins) or 1
        under.bar(centres, [b["count"] / n for b in bins], width=width, color="#a8dadc")
        under.set_xlabel("confidence (top-1 probability)")
        under.set_ylabel("share")
    if title:
        fig.suptitle(title)
    return png_bytes(fig)


def image_grid_png(
    images: Sequence[np.ndarray], captions: Sequence[str], title: str, cols: int = 6
) -> bytes | None:
    """uint8 (3, H, W) images in a grid, each with its caption under it, and a title;
    None when there are none (the worst examples, the label issues)."""
    if not len(images):
        return None
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image.transpose(1, 2, 0))
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return png_bytes(fig)
