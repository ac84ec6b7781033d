"""A written shard set read back (training/shards.py writes it): the rows' layout
(``META_COLUMNS``, ``decode_order``), ``ShardSet`` (the metadata columns only, and the
``DecodedDataset`` of its decoded files), ``ShardImages`` (a numpy-like lazy array that
reads a shard only when one of its images is asked for) and ``ShardSet.part``, the Ray
Data dataset of some rows that a TorchTrainer hands to its workers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.dataset_types import DatasetIndex, DecodedDataset

if TYPE_CHECKING:
    import ray.data


META_COLUMNS = ["id", "label", "path", "width", "height", "mode", "sha1", "phash", "error"]
ROWS_PER_SHARD = 256  # ~38 MB of images per shard at 224 px


def decode_order(n: int) -> np.ndarray:
    """The listing ids in the order they are decoded, stored and numbered: shuffled once
    (seed 0: part of the data set version, not of a job). An ImageFolder listing runs
    class by class, and a shard of one class would make a stream's batches one class too;
    numbering the images in this order keeps a walk over them a walk over the shards."""
    return np.random.default_rng(0).permutation(n)


def _parquet() -> Any:
    import pyarrow.parquet as pq

    return pq


def _images_of(table: Any) -> np.ndarray:
    """The ``image`` column (raw bytes of uint8 (3, S, S), one value per row) as an
    array (N, 3, S, S), without a copy per image."""
    import pyarrow as pa

    parts: list[np.ndarray] = []
    for chunk in table.column("image").chunks:
        if not len(chunk):
            continue
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], width)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        side = int(round(((offsets[1] - offsets[0]) / 3) ** 0.5))
        parts.append(data.reshape(len(chunk), 3, side, side))
    if not parts:
        return np.zeros((0, 3, 0, 0), np.uint8)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ShardImages:
    """uint8 images (N, 3, S, S) that stay in their shards until indexed: ``x[i]``,
    ``x[a:b]``, ``x[[i, j]]``, iteration and ``len`` as on an array; a shard read is kept
    (the last two) so walking the images in order reads each shard once."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        files: list[str],
        filesystem: Any,
        file_of: np.ndarray,
        row_of: np.ndarray,
        image_size: int,
    ):
        self.files, self.filesystem, self.image_size = files, filesystem, image_size
        self.file_of = np.asarray(file_of, np.int32)
        self.row_of = np.asarray(row_of, np.int32)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def __len__(self) -> int:
        return len(self.file_of)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.image_size, self.image_size)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def _shard(self, f: int) -> np.ndarray:
        if f in self._cache:
            self._cache.move_to_end(f)
            return self._cache[f]
        pq = _parquet()

        table = pq.read_table(self.files[f], columns=["image"], filesystem=self.filesystem)
        arr = _images_of(table)
        self._cache[f] = arr
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return arr

    def _positions(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        pos = np.asarray(key)
        if pos.dtype == bool:
            return np.nonzero(pos)[0]
        return pos.astype(np.int64).ravel()

    def take(self, positions: Any) -> np.ndarray:
        pos = self._positions(positions)
        out = np.empty((len(pos), 3, self.image_size, self.image_size), np.uint8)
        files = self.file_of[pos]
        for f in np.unique(files):
            sel = np.nonzero(files == f)[0]
            out[sel] = self._shard(int(f))[self.row_of[pos[sel]]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            one: np.ndarray = self.take([int(key) % len(self)])[0]
            return one
        return self.take(key)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), 64):
            yield from self.take(slice(start, start + 64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.take(slice(None))
        return arr if dtype is None else arr.astype(dtype)

    def view(self, positions: Any) -> ShardImages:
        """The images at ``positions``, still lazy."""
        pos = self._positions(positions)
        return ShardImages(
            self.files, self.filesystem, self.file_of[pos], self.row_of[pos], self.image_size
        )


@dataclass
class ShardSet:
    """A written shard set, read back without its images: per listed file (by id) where
    its row is and what the decode found."""

    files: list[str]
    filesystem: Any
    image_size: int
    meta: dict[str, np.ndarray]  # META_COLUMNS, sorted by id
    file_of: np.ndarray
    row_of: np.ndarray

    @classmethod
    def read(cls, files: list[str], filesystem: Any, image_size: int) -> ShardSet:
        import pyarrow as pa

        pq = _parquet()

        tables, file_of, row_of = [], [], []
        for f, path in enumerate(files):
            t = pq.read_table(path, columns=META_COLUMNS, filesystem=filesystem)
            tables.append(t)
            file_of.append(np.full(t.num_rows, f, np.int32))
            row_of.append(np.arange(t.num_rows, dtype=np.int32))
        table = pa.concat_tables(tables) if tables else None
        if table is None or table.num_rows == 0:
            raise ValueError("the shard set holds no rows")
        ids = table.column("id").to_numpy()
        order = np.argsort(ids, kind="stable")
        meta = {c: table.column(c).to_numpy(zero_copy_only=False)[order] for c in META_COLUMNS}
        if not np.array_equal(meta["id"], np.arange(len(ids))):
            raise ValueError("the shard set does not hold every listed file exactly once")
        return cls(
            files,
            filesystem,
            image_size,
            meta,
            np.concatenate(file_of)[order],
            np.concatenate(row_of)[order],
        )

    def __len__(self) -> int:
        return len(self.meta["id"])

    def matches(self, index: DatasetIndex) -> bool:
        """The same listing (paths and labels, in order) as ``index``."""
        paths = index.relative()
        return (
            len(paths) == len(self)
            and list(self.meta["path"]) == paths
            and np.array_equal(self.meta["label"], index.labels)
        )

    def kept(self) -> np.ndarray:
        """Listing ids of the files that decoded, in ``decode_order``: position i of
        ``decoded()`` is listing id ``kept()[i]``."""
        order = decode_order(len(self))
        kept: np.ndarray = order[self.meta["error"][order] == ""]
        return kept

    def decoded(self, classes: list[str]) -> DecodedDataset:
        """The DecodedDataset of the decoded files, numbered in ``decode_order`` (so a
        walk over its images reads each shard once), images lazy."""
        m, keep = self.meta, self.kept()
        bad = [(str(m["path"][i]), str(m["error"][i])) for i in np.nonzero(m["error"] != "")[0]]
        images = ShardImages(
            self.files, self.filesystem, self.file_of[keep], self.row_of[keep], self.image_size
        )
        return DecodedDataset(
            images,
            m["label"][keep].astype(np.int64),
            list(classes),
            bad,
            paths=[str(p) for p in m["path"][keep]],
            sizes=[(int(w), int(h)) for w, h in zip(m["width"][keep], m["height"][keep])],
            modes=[str(x) for x in m["mode"][keep]],
            sha1=[str(x) for x in m["sha1"][keep]],
            phash=m["phash"][keep].astype(np.uint64),
        )

    def part(
        self, ids: np.ndarray, epochs: int = 1, seed: int = 0, readers: int = 4
    ) -> ray.data.Dataset:
        """A Ray Data dataset of the rows ``ids`` (listing ids): id, label, image, one
        block per shard, ``epochs`` times over, each pass over the shards in its own
        seeded order and each shard's rows shuffled by its reader (a shuffle the trainer's
        process does not pay for, where a local shuffle buffer copies every batch in it;
        a batch holds images of one shard, ``ROWS_PER_SHARD`` drawn from the whole set by
        ``decode_order``, a new mix each epoch). One pass (``epochs=1``) keeps the order.
        Many epochs in one dataset are one Ray Data execution for a whole
        run: a ``streaming_split`` starts its coordinator once, not every epoch (seconds
        each time, Ray #49190), and the next epoch's reads overlap this one's training.

        Reading a decoded shard is I/O, not compute: its tasks ask for no CPU, so they
        run beside Train workers that hold every CPU of the node (tasks that ask for one
        would wait for ever on a node the workers fill). Asking for nothing, they are not
        held back by the CPUs either: at most ``readers`` run at once (each in a worker
        process of its own, whose start-up costs seconds; two per consumer keep one
        shard ahead of each)."""
        import ray.data

        if epochs < 1:
            raise ValueError("epochs must be at least 1")
        keep = np.zeros(len(self), bool)
        keep[np.asarray(ids, np.int64)] = True
        rng = np.random.default_rng(seed)
        if epochs == 1:  # one pass (validation): the files and rows in order
            files = [{"file": f, "seed": -1} for f in self.files]
        else:  # each epoch its own order of files, and of rows within each file
            files = [
                {"file": self.files[f], "seed": int(rng.integers(2**31))}
                for _ in range(epochs)
                for f in rng.permutation(len(self.files))
            ]
        return ray.data.from_items(files, override_num_blocks=len(files)).map_batches(
            _read_rows,  # type: ignore[arg-type]  # Ray's types leave out fn_kwargs' arguments
            fn_kwargs={"filesystem": self.filesystem, "keep": keep},
            batch_size=1,
            batch_format="numpy",
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=max(1, readers)),
        )


def _read_rows(
    batch: dict[str, np.ndarray], filesystem: Any, keep: np.ndarray
) -> dict[str, np.ndarray]:
    """Ray Data map_batches: the kept rows (id, label, image) of the shard files named,
    shuffled by their ``seed`` (-1: in order)."""
    pq = _parquet()

    ids, labels, images = [], [], []
    for path, seed in zip(batch["file"], batch["seed"]):
        t = pq.read_table(str(path), columns=["id", "label", "image"], filesystem=filesystem)
        rows = np.nonzero(keep[t.column("id").to_numpy()])[0]
        if seed >= 0:
            rows = np.random.default_rng(int(seed)).permutation(rows)
        ids.append(t.column("id").to_numpy()[rows])
        labels.append(t.column("label").to_numpy()[rows])
        images.append(_images_of(t)[rows])
    return {
        "id": np.concatenate(ids),
        "label": np.concatenate(labels),
        "image": np.concatenate(images),
    }
