"""Bulk predictions, one batch of listed images at a time: what each Ray Data actor of a
predict job runs (services/jobs/predict_step.py loads the model once per actor and streams
the batches through it).

A batch names its images as a listing does: ``path`` (relative to the folder or the S3
prefix), ``bytes`` (the listed size; -1 when unknown) and ``etag`` (an object's identity,
empty for a file). ``ImageSource`` reads them: a local folder (the file must stay inside
it, symbolic links resolved; no more than ``MAX_FILE_BYTES``) or a remote listing through
an ``ObjectReader`` (training/data.py; the services give one). Each image is decoded
exactly as the predict app decodes one (``training.predict.decode_image``: RGB, bilinear
to the model's side) and the good ones go through the model in one pass, with model.pt's
temperature (``training.evaluate.predict_probs``): the same probabilities as the app's.

With ``embed`` (a predict job that ranks what to label next), each row also carries its
margin and its embedding, the features the head sees, from the same forward pass
(``probs_and_features``). An image that cannot be read or decoded is a row with its
``error`` (empty labels), never a failed batch. Pure: no database, no store; pyarrow tables out.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from training.acquisition import margins
from training.data import IMAGE_EXTENSIONS, MAX_FILE_BYTES, DataError, ObjectReader
from training.evaluate import predict_logits, predict_probs
from training.model import head_prefix
from training.predict import BadImage, Predictor, decode_image

READ_THREADS = 8  # images read at once by one batch: a GET (or a cold disk) waits
COLUMNS = ("path", "label", "probability", "labels", "probabilities", "error")
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),  # the most probable label; null for an unreadable image
        ("probability", pa.float64()),
        ("labels", pa.list_(pa.string())),  # the top k, most probable first
        ("probabilities", pa.list_(pa.float64())),
        ("error", pa.string()),  # null when the image was read and predicted
    ]
)


Listed = tuple[str, int, str]  # (path under the folder or prefix, size or -1, ETag or "")
# with ``embed`` (what to label next): each row's margin (top1 - top2) and the features the
# head sees (its embedding); both null for an unreadable image
EMBED_FIELDS = (pa.field("margin", pa.float64()), pa.field("embedding", pa.list_(pa.float32())))


def probs_and_features(
    model: Any, images: np.ndarray, device: str = "cpu", temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (as ``predict_probs``) and, from the same pass, the
    features the head (the last Linear) is given: (N, classes), (N, D) float32."""
    inner = getattr(model, "module", model)
    head = inner.get_submodule(head_prefix(inner)[:-1])
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().flatten(1).float().cpu())
    )
    try:
        logits = predict_logits(model, images, device=device)
    finally:
        hook.remove()
    probs = torch.softmax(torch.from_numpy(logits) / temperature, dim=1).numpy()
    return probs, torch.cat(seen).numpy() if seen else np.zeros((0, 0), np.float32)


def image_objects(objects: list[Listed], where: str) -> list[Listed]:
    """The images among a folder's or a prefix's objects (by extension, as training
    lists them; names starting with ``.`` skipped), in path order. A name that leaves
    the folder (``..``, absolute) is refused (DataError), as a training listing refuses it."""
    images = []
    for rel, size, etag in objects:
        norm = posixpath.normpath(rel)
        if norm == ".." or norm.startswith("../") or rel.startswith("/"):
            raise DataError(f"refusing {where}{rel}: its name leaves the folder")
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            continue
        if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
            images.append((rel, size, etag))
    images.sort(key=lambda r: r[0].split("/"))
    if not images:
        raise DataError(f"no images under {where}")
    return images


def list_folder(root: Path) -> list[Listed]:
    """Every image file under the folder ``root``, at any depth, in path order (a symbolic
    link is listed, with no size: reading it checks where it leads)."""
    if not root.is_dir():
        raise DataError(f"dataset not found: {root} is not a folder")
    objects = []
    for p in root.rglob("*"):
        if p.is_symlink():
            objects.append((p.relative_to(root).as_posix(), -1, ""))
        elif p.is_file():
            objects.append((p.relative_to(root).as_posix(), p.stat().st_size, ""))
    return image_objects(objects, f"{root}/")


class UnreadableFile(OSError):
    """A listed image that cannot be read: outside the folder, too large, gone."""


@dataclass(frozen=True)
class ImageSource:
    """Where a batch's images are read: the local folder ``root``, or ``reader``'s listing."""

    root: str | None = None
    reader: ObjectReader | None = None

    def read(self, name: str, n_bytes: int, etag: str) -> bytes:
        """The bytes of one listed image; UnreadableFile (or the reader's OSError) when
        they cannot be read."""
        if n_bytes > MAX_FILE_BYTES:  # from the listing: never read
            raise UnreadableFile(
                f"{n_bytes / 2**20:.0f} MB: over the {MAX_FILE_BYTES // 2**20} MB limit"
            )
        if self.reader is not None:
            raw = self.reader.read(name, etag, MAX_FILE_BYTES)
        else:
            if self.root is None:
                raise ValueError("an ImageSource needs a root or a reader")
            base = Path(self.root).resolve()
            path = (base / name).resolve()
            if base not in path.parents:
                raise UnreadableFile("outside the folder (a symbolic link?)")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise UnreadableFile(f"over the {MAX_FILE_BYTES // 2**20} MB limit")
            raw = path.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise UnreadableFile(f"over the {MAX_FILE_BYTES // 2**20} MB limit")
        return raw


def _reason(e: BaseException) -> str:
    text = str(e) if isinstance(e, BadImage) else f"{type(e).__name__}: {e}"
    return (text.splitlines() or [type(e).__name__])[0][:300]


class BatchPredictor:
    """A loaded model answering whole batches of listed images (see the module)."""

    def __init__(
        self,
        predictor: Predictor,
        source: ImageSource,
        k: int = 5,
        device: str = "cpu",
        embed: bool = False,
    ) -> None:
        self.predictor, self.source, self.device, self.embed = predictor, source, device, embed
        self.k = max(1, min(k, len(predictor.classes)))
        self.model = predictor.model.eval().to(device)

    def _read(self, name: str, n_bytes: int, etag: str) -> bytes | str:
        try:
            return self.source.read(name, n_bytes, etag)
        except (OSError, ValueError) as e:
            return _reason(e)

    def _decoded(self, raw: bytes | str) -> np.ndarray | str:
        if isinstance(raw, str):
            return raw
        try:
            return decode_image(raw, self.predictor.image_size)
        except BadImage as e:
            return _reason(e)

    def decode(self, batch: dict[str, Any]) -> list[np.ndarray | str]:
        """Each listed image of ``batch`` decoded (uint8 (3, S, S)), or its reason. The
        reads overlap (threads: they wait on the disk or the network); the decodes run one
        after another on this thread, so an actor of one CPU uses one."""
        names = [str(p) for p in batch["path"]]
        sizes = [int(n) for n in batch["bytes"]] if "bytes" in batch else [-1] * len(names)
        etags = [str(e) for e in batch["etag"]] if "etag" in batch else [""] * len(names)
        rows = list(zip(names, sizes, etags))
        if len(rows) <= 1:
            raws = [self._read(*row) for row in rows]
        else:
            with ThreadPoolExecutor(min(READ_THREADS, len(rows))) as pool:
                raws = list(pool.map(lambda row: self._read(*row), rows))
        return [self._decoded(raw) for raw in raws]

    def probs(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (softmax(logits / T)) of uint8 (N, 3, S, S) images."""
        return predict_probs(
            self.model, images, device=self.device, temperature=self.predictor.temperature
        )

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        """One output row per listed image, in the batch's order (``SCHEMA``, then
        ``EMBED_FIELDS`` with ``embed``)."""
        decoded = self.decode(batch)
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        n = len(decoded)
        probs = features = None
        if good:
            images = np.stack([decoded[i] for i in good])
            if self.embed:
                probs, features = probs_and_features(
                    self.model, images, self.device, self.predictor.temperature
                )
            else:
                probs = self.probs(images)
        label: list[str | None] = [None] * n
        prob: list[float | None] = [None] * n
        labels: list[list[str]] = [[] for _ in range(n)]
        probabilities: list[list[float]] = [[] for _ in range(n)]
        error = [d if isinstance(d, str) else None for d in decoded]
        if probs is not None:
            order = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
            classes = self.predictor.classes
            for row, i in enumerate(good):
                labels[i] = [classes[j] for j in order[row]]
                probabilities[i] = [float(probs[row, j]) for j in order[row]]
                label[i], prob[i] = labels[i][0], probabilities[i][0]
        columns = [
            [str(p) for p in batch["path"]],
            label,
            prob,
            labels,
            probabilities,
            error,
        ]
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA
        )
        return self._with_embeddings(table, good, probs, features) if self.embed else table

    @staticmethod
    def _with_embeddings(
        table: pa.Table, good: list[int], probs: np.ndarray | None, features: np.ndarray | None
    ) -> pa.Table:
        margin: list[float | None] = [None] * table.num_rows
        embedding: list[list[float] | None] = [None] * table.num_rows
        if probs is not None and features is not None:
            for row, (i, m) in enumerate(zip(good, margins(probs))):
                margin[i], embedding[i] = float(m), features[row].tolist()
        for f, values in zip(EMBED_FIELDS, (margin, embedding)):
            table = table.append_column(f, pa.array(values, type=f.type))
        return table


def csv_table(table: pa.Table, k: int) -> pa.Table:
    """The rows for a spreadsheet: the top k spread over ``label_i`` and ``probability_i``
    columns (empty past an image's own labels), then ``error`` and the other flat columns."""
    labels = table.column("labels").to_pylist()
    probabilities = table.column("probabilities").to_pylist()
    columns: dict[str, pa.Array] = {"path": table.column("path")}
    for i in range(k):
        columns[f"label_{i + 1}"] = pa.array(
            [ls[i] if i < len(ls) else None for ls in labels], type=pa.string()
        )
        columns[f"probability_{i + 1}"] = pa.array(
            [ps[i] if i < len(ps) else None for ps in probabilities], type=pa.float64()
        )
    for name in table.column_names:
        if name not in ("path", "label", "probability", "labels", "probabilities"):
            columns[name] = table.column(name)
    return pa.table(columns)
