"""What to label next: a predict job with ``label_next: N`` ranks its pool
(training/acquisition.py: the margin of the calibrated probabilities, then greedy
k-center on the model's embeddings over the 2N most uncertain) and writes, beside
predictions.parquet in predictions/job-<id>/:

- ``to_label.csv``: ``rank``, ``path``, ``margin``, ``label_1``, ``probability_1``, ...
  ``label_k``, ``probability_k``: the N picks (fewer when fewer images were readable),
  rank 1 first (the most uncertain; each next one the farthest from those above it);
- ``to_label.png``: the first ``SHEET`` of them as a contact sheet (rank, predicted
  label, margin under each); none when nothing was picked.

The actors send each row's margin and embedding; the driver keeps only the 2N most
uncertain seen so far (``Candidates``, ties by path), so its memory is bounded by N, not
by the pool, and the picks do not depend on the order the batches arrive in.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from services.store.artifacts import TO_LABEL_CSV, TO_LABEL_PNG
from training.acquisition import POOL_FACTOR, most_uncertain, rank
from training.bulk_predict import ImageSource, Listed

SHEET = 60  # images on the contact sheet at most
SHEET_SIDE = 96  # each decoded at this side for the sheet
SHOWN = 10  # rows the CLI prints
KEPT = ["path", "margin", "embedding", "labels", "probabilities"]
Say = Callable[[str], None]


class Candidates:
    """The ``POOL_FACTOR * n`` readable rows of smallest margin among those added (ties by
    path), trimmed whenever twice as many are held."""

    def __init__(self, n: int) -> None:
        self.n, self.limit = n, POOL_FACTOR * n
        self.parts: list[pa.Table] = []
        self.held = 0

    def add(self, batch: pa.Table) -> None:
        table = batch.filter(pc.is_valid(batch.column("margin"))).select(KEPT)
        if table.num_rows:
            self.parts.append(table)
            self.held += table.num_rows
            if self.held > 2 * self.limit:
                self._trim()

    def _trim(self) -> None:
        if not self.parts:
            return
        table = pa.concat_tables(self.parts).combine_chunks()
        keep = most_uncertain(
            table.column("margin").to_numpy(), self.limit, table.column("path").to_pylist()
        )
        table = table.take(pa.array(keep, pa.int64()))
        self.parts, self.held = [table], table.num_rows

    def table(self) -> pa.Table | None:
        """What is held, trimmed; None when no readable row was added."""
        self._trim()
        return self.parts[0] if self.parts else None


def pick(candidates: Candidates) -> list[dict[str, Any]]:
    """The rows to label next, rank 1 first: rank, path, margin, labels, probabilities."""
    table = candidates.table()
    if table is None:
        return []
    emb = table.column("embedding").combine_chunks()
    dim = len(emb[0].values) if len(emb) else 0
    embeddings = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(emb), dim)
    paths = table.column("path").to_pylist()
    picks = rank(table.column("margin").to_numpy(), embeddings, candidates.n, keys=paths)
    labels, probs = table.column("labels").to_pylist(), table.column("probabilities").to_pylist()
    return [
        {
            "rank": r + 1,
            "path": paths[i],
            "margin": float(m),
            "labels": labels[i],
            "probabilities": probs[i],
        }
        for r, (i, m) in enumerate(zip(picks.index.tolist(), picks.margin))
    ]


def write_csv(path: Path, rows: list[dict[str, Any]], k: int) -> None:
    """to_label.csv: one row per pick, the top k spread over label_i / probability_i."""
    top = [f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "probability")]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["rank", "path", "margin", *top])
        for r in rows:
            spread: list[Any] = []
            for i in range(k):
                has = i < len(r["labels"])
                spread += [r["labels"][i] if has else "", r["probabilities"][i] if has else ""]
            out.writerow([r["rank"], r["path"], f"{r['margin']:.6f}", *spread])


def sheet_png(rows: list[dict[str, Any]], source: ImageSource, listing: list[Listed]) -> bytes:
    """The contact sheet of the first ``SHEET`` picks (an image read again from its folder
    or prefix; one that cannot be read now is left out)."""
    from training.plots import image_grid_png
    from training.predict import decode_image

    etags = {name: etag for name, _size, etag in listing}
    images, captions = [], []
    for r in rows[:SHEET]:
        try:
            raw = source.read(r["path"], -1, etags.get(r["path"], ""))
            images.append(decode_image(raw, SHEET_SIDE))
        except (OSError, ValueError):
            continue
        captions.append(f"{r['rank']}. {r['labels'][0]} (margin {r['margin']:.2f})")
    title = f"to label next: {len(images)} of {len(rows)} (rank, predicted label, margin)"
    return image_grid_png(images, captions, title, cols=10) or b""


@dataclass(frozen=True)
class ToLabel:
    """The picks and the files written for them (names in the job's folder)."""

    rows: list[dict[str, Any]]
    files: list[str] = field(default_factory=list)

    def lines(self, uri: str | None = None) -> list[str]:
        """What the CLI prints: how many, and the first ``SHOWN``."""
        if not self.rows:
            return ["what to label next: no readable image to rank"]
        out = [f"what to label next: {len(self.rows)} images (rank, margin, predicted label)"]
        for r in self.rows[:SHOWN]:
            top = f"{r['labels'][0]} ({r['probabilities'][0]:.2f})"
            out.append(f"  {r['rank']:>4}  {r['margin']:.3f}  {top:<24} {r['path']}")
        if len(self.rows) > SHOWN:
            out.append(f"  ... all {len(self.rows)} in {uri or TO_LABEL_CSV}")
        return out


def write_to_label(
    folder: Path,
    candidates: Candidates,
    k: int,
    images: tuple[ImageSource, list[Listed]],
    say: Say,
) -> ToLabel:
    """to_label.csv (always) and to_label.png (when there are picks; a sheet that cannot
    be drawn is said, never fatal) in ``folder``."""
    rows = pick(candidates)
    write_csv(folder / TO_LABEL_CSV, rows, k)
    files = [TO_LABEL_CSV]
    if rows:
        try:
            png = sheet_png(rows, *images)
        except Exception as e:  # noqa: BLE001 - a picture: said, never fatal
            say(f"label next: no contact sheet ({type(e).__name__}: {e})")
        else:
            if png:
                (folder / TO_LABEL_PNG).write_bytes(png)
                files.append(TO_LABEL_PNG)
    spread = [r["margin"] for r in rows]
    span = f" (margins {min(spread):.3f} to {max(spread):.3f})" if rows else ""
    say(f"label next: {len(rows)} images picked to label{span}")
    return ToLabel(rows, files)
