"""Decode-once shards without a cluster: the data set version's key, the store keys, shard
files written as Ray Data writes them (the same decode function), read back lazily, and
the pieces that let a run or a trial use them (folds, samples, batch helpers)."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from services.store.artifacts import decoded_manifest_key, decoded_prefix
from tests.conftest import write_dataset
from training import data as datasets
from training.augment import per_image, train_transform
from training.hyperparams import Hyperparameters
from training.loaders import with_last
from training.loop import TrainData
from training.shards import ShardImages, ShardSet, _decode_rows, _read_rows, decode_order
from tuning.cv import CVData, cv_folds


def _write_shards(index: datasets.DatasetIndex, folder, size: int, rows: int) -> list[str]:
    """Shards as decode_to_shards writes them (its map_batches function), shuffled ids."""
    order = decode_order(len(index.paths))
    files = []
    for n, start in enumerate(range(0, len(order), rows)):
        ids = order[start : start + rows]
        batch = {
            "id": ids,
            "label": index.labels[ids],
            "path": np.array([index.paths[i].relative_to(index.root).as_posix() for i in ids]),
        }
        path = str(folder / f"part-{n}.parquet")
        pq.write_table(_decode_rows(batch, str(index.root), size), path, compression="none")
        files.append(path)
    return files


@pytest.fixture
def shard_data(tmp_path):
    root = write_dataset(tmp_path / "data", classes=3, per_class=7, size=12, corrupt=1)
    index = datasets.discover(root)
    folder = tmp_path / "shards"
    folder.mkdir()
    files = _write_shards(index, folder, 16, rows=5)
    return index, ShardSet.read(files, None, 16)


def test_fingerprint_is_stable_and_changes_with_the_data_and_the_size(tmp_path):
    root = write_dataset(tmp_path / "d", classes=2, per_class=3, size=8)
    key = datasets.fingerprint(datasets.discover(root), 32)
    assert key == datasets.fingerprint(datasets.discover(root), 32)
    assert key != datasets.fingerprint(datasets.discover(root), 64)
    f = root / "class_0" / "000.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # rewritten
    assert datasets.fingerprint(datasets.discover(root), 32) != key
    key = datasets.fingerprint(datasets.discover(root), 32)
    (root / "class_1" / "000.png").rename(root / "class_0" / "009.png")  # relabelled
    assert datasets.fingerprint(datasets.discover(root), 32) != key


def test_decoded_keys_sit_under_cache_decoded_by_hash_and_size():
    assert decoded_prefix("ab" * 20, 224) == f"cache/decoded/{'ab' * 12}-224"
    assert decoded_manifest_key("ab" * 20, 64).endswith(f"{'ab' * 12}-64/manifest.json")


def _same_order(lazy, mem) -> np.ndarray:
    """mem's positions in lazy's order (the shards number images in decode_order)."""
    at = {p: i for i, p in enumerate(mem.paths)}
    return np.array([at[p] for p in lazy.paths])


def test_shards_read_back_as_the_in_memory_decode(shard_data):
    index, shards = shard_data
    lazy = shards.decoded(index.classes)
    mem = datasets.decode(index, 16, "skip")
    assert isinstance(lazy.images, ShardImages) and len(lazy) == len(mem) == 21
    assert [p for p, _ in lazy.bad] == [p for p, _ in mem.bad] == ["class_0/broken_0.png"]
    o = _same_order(lazy, mem)
    assert sorted(o.tolist()) == list(range(21)) and o.tolist() != list(range(21))  # shuffled
    assert lazy.sha1 == [mem.sha1[i] for i in o] and lazy.sizes == [mem.sizes[i] for i in o]
    np.testing.assert_array_equal(lazy.labels, mem.labels[o])
    np.testing.assert_array_equal(lazy.phash, mem.phash[o])
    np.testing.assert_array_equal(np.asarray(lazy.images), mem.images[o])
    np.testing.assert_array_equal(lazy.images[[20, 0, 7]], mem.images[o[[20, 0, 7]]])
    np.testing.assert_array_equal(lazy.images[3], mem.images[o[3]])
    np.testing.assert_array_equal(lazy.images[-1], mem.images[o[-1]])
    np.testing.assert_array_equal(lazy.images[2:9], mem.images[o[2:9]])
    np.testing.assert_array_equal(np.stack(list(lazy.images)), mem.images[o])
    view = lazy.images.view(np.array([5, 1]))
    assert len(view) == 2 and view.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(view[0:2], mem.images[o[[5, 1]]])
    assert shards.matches(index)
    ids = shards.kept()  # position -> listing id
    assert [index.paths[i].relative_to(index.root).as_posix() for i in ids] == lazy.paths


def test_a_shard_set_missing_a_row_is_refused(shard_data, tmp_path):
    index, shards = shard_data
    with pytest.raises(ValueError, match="every listed file"):
        ShardSet.read(shards.files[1:], None, 16)


def test_a_part_reads_only_its_rows_from_the_shards(shard_data):
    index, shards = shard_data
    keep = np.zeros(len(shards), bool)
    keep[[2, 3, 17]] = True
    files = np.array(shards.files)
    out = _read_rows({"file": files, "seed": np.full(len(files), -1)}, None, keep)
    order = np.argsort(out["id"])
    assert out["id"][order].tolist() == [2, 3, 17]
    np.testing.assert_array_equal(out["label"][order], index.labels[[2, 3, 17]])
    assert out["image"].shape == (3, 3, 16, 16) and out["image"].dtype == np.uint8
    # an epoch's pass: the same rows, shuffled by the seed, each image with its label
    everything = np.ones(len(shards), bool)
    plain = _read_rows({"file": files, "seed": np.full(len(files), -1)}, None, everything)
    orders = []
    for seed in (1, 2):
        got = _read_rows({"file": files, "seed": np.full(len(files), seed)}, None, everything)
        assert sorted(got["id"].tolist()) == sorted(plain["id"].tolist())
        at = {int(i): k for k, i in enumerate(plain["id"])}
        back = [at[int(i)] for i in got["id"]]
        np.testing.assert_array_equal(got["image"], plain["image"][back])
        np.testing.assert_array_equal(got["label"], plain["label"][back])
        orders.append(got["id"].tolist())
    assert orders[0] != orders[1] != plain["id"].tolist()


def test_folds_over_lazy_images_read_their_images_from_the_shards(shard_data):
    index, shards = shard_data
    lazy, mem = shards.decoded(index.classes), datasets.decode(index, 16, "skip")
    o = _same_order(lazy, mem)
    split = datasets.split(lazy.labels, 0.2, 0.2, seed=3)
    assert split.sizes() == datasets.split(mem.labels, 0.2, 0.2, seed=3).sizes()
    folds = cv_folds(lazy.labels, split, 2, 0)
    local = CVData(lazy.images, lazy.labels, lazy.classes, folds).local()
    assert isinstance(local.images, np.ndarray)
    assert len(local.images) == len(split.train) + len(split.val)
    for (a, b), (la, lb) in zip(folds, local.folds):
        np.testing.assert_array_equal(local.images[la], mem.images[o[a]])
        np.testing.assert_array_equal(local.labels[lb], mem.labels[o[b]])


def test_sample_in_memory_reads_a_seeded_sample_of_train(shard_data):
    index, shards = shard_data
    lazy, mem = shards.decoded(index.classes), datasets.decode(index, 16, "skip")
    data = TrainData(lazy.images, lazy.labels, np.arange(15), np.arange(15, 21), lazy.classes)
    s = data.sample_in_memory(6, seed=0)
    assert isinstance(s.images, np.ndarray) and len(s.train_idx) == 6 and len(s.val_idx) == 0
    picked = np.sort(np.random.default_rng(0).choice(np.arange(15), 6, replace=False))
    np.testing.assert_array_equal(s.images, mem.images[_same_order(lazy, mem)[picked]])
    in_memory = TrainData(mem.images, mem.labels, np.arange(15), np.arange(15, 21), mem.classes)
    assert in_memory.sample_in_memory(6) is in_memory


def test_with_last_marks_only_the_last_item():
    assert list(with_last([])) == []
    assert list(with_last("ab")) == [("a", False), ("b", True)]


def test_per_image_augmentation_draws_for_each_image():
    hp = Hyperparameters(hflip=True, rotation=0, shift=0, zoom=0)
    x = torch.arange(8 * 3 * 4 * 4, dtype=torch.uint8).reshape(8, 3, 4, 4)
    torch.manual_seed(0)
    out = per_image(train_transform(hp))(x)
    assert out.shape == (8, 3, 4, 4) and out.dtype == torch.float32
    plain = per_image(train_transform(Hyperparameters(augment="none")))(x)
    flipped = [not torch.equal(out[i], plain[i]) for i in range(8)]
    assert 0 < sum(flipped) < 8  # some images flipped, some not: one draw per image


class FakeShard:
    """What ray.train.get_dataset_shard gives, over rows in memory; counts its passes."""

    def __init__(self, n: int):
        self.ids = torch.arange(n)
        self.images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4)
        self.passes = 0

    def iter_torch_batches(self, *, batch_size, drop_last=False, **_kw):
        self.passes += 1
        n = len(self.ids)
        stop = n - n % batch_size if drop_last else n
        for s in range(0, stop, batch_size):
            sl = slice(s, min(s + batch_size, stop))
            yield {"id": self.ids[sl], "label": self.ids[sl] % 2, "image": self.images[sl]}


def test_streamed_batches_slice_validation_by_rank_and_keep_it_after_one_pass():
    from training.loaders import StreamedBatches

    hp = Hyperparameters(batch_size=4, augment="none")
    val = FakeShard(10)
    seen = []
    for rank in (0, 1):
        b = StreamedBatches(hp, FakeShard(9), val, 18, rank, 2, torch.device("cpu"))
        first = [y for _, y in b.val(3)]
        second = [y for _, y in b.val(3)]
        assert torch.equal(torch.cat(first), torch.cat(second))
        seen.append(torch.cat(first))
        train = list(b.train(1))
        assert [len(y) for _, y in train] == [4, 4]  # 9 rows, batches of 4: the last dropped
        assert train[0][0].dtype == torch.float32 and train[0][0].shape == (4, 3, 4, 4)
    assert val.passes == 2  # one pass per rank, later epochs from memory
    assert sorted(torch.cat(seen).tolist()) == sorted((torch.arange(10) % 2).tolist())


def test_streamed_batches_take_every_epoch_from_one_stream():
    """Epochs follow each other in one pass over a stream of every epoch's rows (one
    Ray Data execution per run): each epoch the same number of whole batches on every
    rank, the next rows each time, and a clear error if the stream runs dry."""
    from training.loaders import StreamedBatches

    hp = Hyperparameters(batch_size=4, augment="none")
    train = FakeShard(3 * 9)  # this rank's split of 3 epochs x 9 rows (n_train 18, 2 ranks)
    b = StreamedBatches(hp, train, FakeShard(2), 18, 0, 2, torch.device("cpu"))
    got = []
    for epoch in (1, 2, 3):
        batches = list(b.train(epoch))
        assert [len(y) for _, y in batches] == [4, 4]
        got.append(torch.cat([x[:, 0, 0, 0] for x, _ in batches]))
    assert train.passes == 1  # one stream for the whole run
    assert torch.cat(got).tolist() == sorted(set(torch.cat(got).tolist()))  # next rows
    with pytest.raises(RuntimeError, match="stream ended"):
        list(b.train(4))  # 3 rows left: not an epoch of whole batches
    small = StreamedBatches(hp, FakeShard(3), FakeShard(2), 6, 1, 2, torch.device("cpu"))
    assert [len(y) for _, y in small.train(1)] == [3]  # fewer rows than a batch: one batch


def test_a_training_epoch_reports_how_long_it_waited_for_data():
    from training.loaders import Timed

    def slow():  # a loader that takes 20 ms per batch
        for i in range(3):
            time.sleep(0.02)
            yield i

    t = Timed(slow())
    assert list(t) == [0, 1, 2] and 0.06 <= t.seconds < 1


def test_a_complete_decode_prunes_stale_attempts_and_leaves_recent_ones(tmp_path):
    """Attempt folders a killed or replaced decode left are removed once they are older
    than the grace; a recent one (a decode of the same data still running) and the
    manifest stay."""
    from services.jobs.decoded_cache import prune_attempts
    from services.store.storage import LocalStore

    store, prefix = LocalStore(tmp_path), "cache/decoded/ab-16"
    for attempt in ("100-dead", "200-replaced", "290-running", "300-mine"):
        store.put_bytes(f"{prefix}/{attempt}/part-0.parquet", b"x")
    store.put_bytes(f"{prefix}/manifest.json", b"{}")
    assert prune_attempts(store, prefix, "300-mine", before=250) == ["100-dead", "200-replaced"]
    left = {k.split("/")[3] for k in store.list(prefix)}
    assert left == {"290-running", "300-mine", "manifest.json"}
