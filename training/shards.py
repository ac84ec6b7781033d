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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data import (
    DatasetIndex,
    ObjectReader,
    decode_listed_or_reason,
    decode_or_reason,
)
from training.shard_reader import (
    META_COLUMNS,
    ROWS_PER_SHARD,
    ShardImages,
    ShardSet,
    _read_rows,
    decode_order,
)

if TYPE_CHECKING:
    from training.decoding import _Decoded

__all__ = [
    "LOCAL_DECODERS",
    "META_COLUMNS",
    "READ_THREADS",
    "ROWS_PER_SHARD",
    "ShardImages",
    "ShardSet",
    "_decode_rows",
    "_read_rows",
    "decode_order",
    "decode_to_shards",
    "on_this_node",
    "quiet_ray_data",
    "this_node",
]

READ_THREADS = 8  # objects fetched at once by one decode task: a GET waits on the network


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
