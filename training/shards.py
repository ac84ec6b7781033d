"""The data path at scale (Ray Data): decode once per data set version into uint8 shards,
read them lazily, and stream them to Ray Train workers.

``decode_to_shards`` turns a listing (training.data.discover) into Ray Data items, decodes
and resizes them in parallel Ray tasks across the cluster (``map_batches``, with every
trust check of ``training.data.decode_or_reason``) and writes parquet shards into one folder
(a local path, or ``bucket/prefix`` with a pyarrow S3 filesystem). A local listing's files
are opened by path, so its tasks must run where that folder is; a remote listing
(training.data.discover_listing) is read object by object by the tasks themselves through
the ``reader`` the services give (services/store/fetch.py), on any node, and never lands on the
driver's disk (``decode_listed_or_reason``: the same checks, the listed size first).

A shard row is one listed file: ``id`` (its position in the listing), ``label``,
``image`` (uint8 (3, S, S); zeros when unreadable), ``path`` (relative to the data set:
the key under the prefix for a remote one), ``width``, ``height``, ``mode``, ``sha1``,
``phash`` and ``error`` (empty when it decoded). Nothing here holds more than a block of images.

``ShardSet`` is a written set read back without its images (the metadata columns only);
``ShardSet.decoded`` gives the ``DecodedDataset`` every later step uses, whose ``images``
is a ``ShardImages``: a numpy-like lazy array that reads a shard only when one of its
images is asked for. ``ShardSet.part`` is the Ray Data dataset of some rows (a split's
part) that a TorchTrainer hands to its workers (``get_dataset_shard``).

Where the shards live and when a set is complete (its manifest) is the services' business
(services/jobs/decoded_cache.py); this module only reads and writes the files it is given.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data import (
    DatasetIndex,
    DecodedDataset,
    ObjectReader,
    decode_listed_or_reason,
    decode_or_reason,
)

if TYPE_CHECKING:
    import ray.data

    from training.decoding import _Decoded

META_COLUMNS = ["id", "label", "path", "width", "height", "mode", "sha1", "phash", "error"]
ROWS_PER_SHARD = 256  # ~38 MB of images per shard at 224 px
READ_THREADS = 8  # objects fetched at once by one decode task: a GET waits on the network


def decode_order(n: int) -> np.ndarray:
    """The listing ids in the order they are decoded, stored and numbered: shuffled once
    (seed 0: part of the data set version, not of a job). An ImageFolder listing runs
    class by class, and a shard of one class would make a stream's batches one class too;
    numbering the images in this order keeps a walk over them a walk over the shards."""
    return np.random.default_rng(0).permutation(n)


def quiet_ray_data() -> None:
    """No progress bars, and Ray Data's per-execution INFO lines (every epoch on every
    worker) off the console; its own log files keep them."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _filesystem(filesystem: Any) -> Any:
    from pyarrow import fs

    return filesystem if filesystem is not None else fs.LocalFileSystem()


def _decoded_batch(
    batch: dict[str, np.ndarray], root: str, size: int, reader: ObjectReader | None
) -> list[_Decoded | str]:
    """Each listed file of the batch decoded, or the reason it is not: by path under a
    local ``root``, or through ``reader`` (a few objects at once: each is a round trip)."""
    if reader is None:
        base = Path(root)
        resolved = base.resolve()
        return [decode_or_reason(base / str(rel), size, resolved) for rel in batch["path"]]
    from concurrent.futures import ThreadPoolExecutor

    rows = zip(
        [str(p) for p in batch["path"]],
        [int(n) for n in batch["bytes"]],
        [str(e) for e in batch["etag"]],
    )
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(
            pool.map(lambda r: decode_listed_or_reason(reader, r[0], r[1], r[2], size), rows)
        )


def _decode_rows(
    batch: dict[str, np.ndarray], root: str, size: int, reader: ObjectReader | None = None
) -> Any:  # a pyarrow Table
    """Ray Data map_batches: decode and resize one batch of listed files."""
    n = len(batch["id"])
    images = np.zeros((n, 3, size, size), np.uint8)
    width = np.zeros(n, np.int32)
    height = np.zeros(n, np.int32)
    phash = np.zeros(n, np.uint64)
    mode, sha1, error = [""] * n, [""] * n, [""] * n
    for k, r in enumerate(_decoded_batch(batch, root, size, reader)):
        if isinstance(r, str):
            error[k] = r
            continue
        images[k] = r.array
        width[k], height[k] = r.size
        mode[k], sha1[k], phash[k] = r.mode, r.sha1, r.phash
    import pyarrow as pa

    return pa.table(
        {
            "id": pa.array(np.asarray(batch["id"], np.int64)),
            "label": pa.array(np.asarray(batch["label"], np.int64)),
            # raw bytes, one value per image: parquet reads a binary column at disk speed,
            # where Ray's tensor type (a list of uint8) decodes value by value, ~50x slower
            "image": pa.array([x.tobytes() for x in images], type=pa.binary()),
            "path": pa.array([str(p) for p in batch["path"]], type=pa.string()),
            "width": pa.array(width),
            "height": pa.array(height),
            "mode": pa.array(mode, type=pa.string()),
            "sha1": pa.array(sha1, type=pa.string()),
            "phash": pa.array(phash),
            "error": pa.array(error, type=pa.string()),
        }
    )


LOCAL_DECODERS = 2  # decode tasks at once on a node that gives tasks no CPU (a 0-CPU head)


def this_node() -> tuple[Any, dict[str, float]]:
    """A hard node affinity to this (the driver's) node, and the resources it offers:
    what keeps work that opens a local folder's files where the folder is (on any other
    node every file would be missing)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    offers: dict[str, float] = next(
        (n["Resources"] for n in ray.nodes() if n["NodeID"] == node), {}
    )
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False), offers


def on_this_node() -> dict[str, Any]:
    """Ray Data arguments that run a local listing's decode tasks on this node
    (``this_node``). A node that offers tasks no CPU (a head started with
    ``--num-cpus=0``) still decodes: tasks that ask for none, ``LOCAL_DECODERS`` at a
    time, as the driver would decode in its own process."""
    strategy, offers = this_node()
    args: dict[str, Any] = {"scheduling_strategy": strategy}
    if offers.get("CPU", 0) < 1:
        args.update(num_cpus=0, concurrency=LOCAL_DECODERS)
    return args


def decode_to_shards(
    index: DatasetIndex,
    image_size: int,
    folder: str,
    filesystem: Any = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    reader: ObjectReader | None = None,
) -> list[str]:
    """Decode every listed file with Ray Data and write the shards under ``folder``;
    returns the shard files' paths (for ``filesystem``), sorted. Needs a connected Ray.
    A remote listing needs ``reader``: the tasks read its objects with it (it travels
    in their arguments, pickled, as ``filesystem`` does), on any node; a local one is
    decoded on this node (``on_this_node``)."""
    import ray.data
    from pyarrow import fs as pafs

    if index.remote and reader is None:
        raise ValueError(f"{index.source} is a remote listing: its objects need a reader")
    items: list[dict[str, Any]] = [
        {"id": i, "label": int(label), "path": rel}
        for i, (rel, label) in enumerate(zip(index.relative(), index.labels.tolist()))
    ]
    if index.remote:
        assert index.sizes is not None and index.etags is not None
        for item, n, etag in zip(items, index.sizes, index.etags):
            item["bytes"], item["etag"] = int(n), etag
    items = [items[i] for i in decode_order(len(items))]
    blocks = max(1, math.ceil(len(items) / rows_per_shard))
    quiet_ray_data()
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _decode_rows,  # type: ignore[arg-type]  # Ray's types leave out fn_kwargs' arguments
        fn_kwargs={"root": str(index.root), "size": image_size, "reader": reader},
        batch_size=rows_per_shard,
        batch_format="numpy",
        **({} if index.remote else on_this_node()),
    )
    ds.write_parquet(
        folder,
        filesystem=filesystem,
        min_rows_per_file=rows_per_shard,
        compression="none",  # decoded pixels: a codec costs more time than it saves bytes
        use_dictionary=False,
    )
    infos = _filesystem(filesystem).get_file_info(pafs.FileSelector(folder, recursive=False))
    return sorted(i.path for i in infos if i.path.endswith(".parquet"))


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
