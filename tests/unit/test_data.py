import numpy as np
import pytest

from training import data


def labels_of(counts):
    return np.concatenate([np.full(n, i) for i, n in enumerate(counts)])


def test_split_is_stratified_disjoint_and_complete():
    y = labels_of([100, 50, 30])
    s = data.split(y, 0.1, 0.1, seed=0)
    parts = [s.train, s.val, s.test]
    assert sum(map(len, parts)) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)
    assert (len(s.val), len(s.test)) == (18, 18)
    for part in (s.val, s.test):  # each class in proportion: 10 / 5 / 3
        assert np.bincount(y[part]).tolist() == [10, 5, 3]


def test_split_is_seeded():
    y = labels_of([40, 40])
    a, b, c = data.split(y, seed=1), data.split(y, seed=1), data.split(y, seed=2)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_split_caps():
    y = labels_of([500, 500])
    s = data.split(y, 0.1, 0.1, val_max=20, test_max=30)
    assert (len(s.val), len(s.test), len(s.train)) == (20, 30, 950)
    assert np.bincount(y[s.test]).tolist() == [15, 15]


def test_kfold_is_stratified_disjoint_and_covers():
    y = labels_of([30, 20])
    idx = np.arange(0, 50, 1)
    folds = data.kfold(y, idx, k=5, seed=0)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == idx.tolist()
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert np.bincount(y[va]).tolist() == [6, 4]


def test_discover_and_decode(make_dataset):
    root = make_dataset(classes=3, per_class=[12, 11, 10], size=16)
    index = data.discover(root)
    assert index.classes == ["class_0", "class_1", "class_2"]
    assert index.counts() == {"class_0": 12, "class_1": 11, "class_2": 10}
    d = data.decode(index, 24)
    assert d.images.shape == (33, 3, 24, 24) and d.images.dtype == np.uint8
    assert d.labels.tolist() == [0] * 12 + [1] * 11 + [2] * 10


def test_unreadable_images_fail_or_are_skipped(make_dataset):
    root = make_dataset(per_class=12, corrupt=2)
    with pytest.raises(data.DataError, match=r"2 unreadable image\(s\): class_0/broken_0.png"):
        data.decode(data.discover(root), 16, "fail")
    d = data.decode(data.discover(root), 16, "skip")
    assert len(d) == 36 and [b[0] for b in d.bad] == [
        "class_0/broken_0.png",
        "class_0/broken_1.png",
    ]


def test_small_class_and_missing_dataset(make_dataset, tmp_path):
    root = make_dataset(per_class=[12, 12, 4])
    with pytest.raises(data.DataError, match=r"fewer than 10 images: class_2 \(4\)"):
        data.load(root, 16, "fail", 10)
    with pytest.raises(data.DataError, match="dataset not found"):
        data.discover(tmp_path / "nope")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(data.DataError, match="no images"):
        data.discover(tmp_path / "empty")


def test_manifest_layout(make_dataset):
    root = make_dataset(per_class=10)
    rows = ["path,label"] + [
        f"class_{c}/{i:03d}.png,{'abc'[c]}" for c in range(3) for i in range(10)
    ]
    (root / "manifest.csv").write_text("\n".join(rows))
    index = data.discover(root)
    assert index.classes == ["a", "b", "c"] and len(index.paths) == 30


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says ``width`` x ``height`` (CRC fixed): a decompression bomb."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_hostile_files_are_unreadable_images_never_a_crash(make_dataset, tmp_path):
    root = make_dataset(per_class=6)
    bad = root / "class_0"
    (bad / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    (bad / "empty.png").write_bytes(b"")
    good = (root / "class_1" / "000.png").read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    with open(bad / "huge.png", "wb") as f:  # 60 MB, sparse
        f.truncate(60 * 2**20)
    (bad / "passwd.png").symlink_to("/etc/passwd")
    decoded = data.decode(data.discover(root), 16, "skip")
    reasons = dict(decoded.bad)
    assert set(reasons) == {
        f"class_0/{n}.png" for n in ("bomb", "empty", "truncated", "huge", "passwd")
    }
    assert "decompression bomb" in reasons["class_0/bomb.png"]
    assert "over the 50 MB limit" in reasons["class_0/huge.png"]
    assert "outside the dataset folder" in reasons["class_0/passwd.png"]
    assert len(decoded) == 18  # every real image kept
    with pytest.raises(data.DataError, match="5 unreadable image"):
        data.decode(data.discover(root), 16, "fail")


def test_manifest_rows_cannot_leave_the_dataset_folder(make_dataset):
    root = make_dataset(per_class=6)
    (root / "manifest.csv").write_text("path,label\nclass_0/000.png,a\n../../etc/passwd,b\n")
    with pytest.raises(data.DataError, match="line 3: '../../etc/passwd' is not a file inside"):
        data.discover(root)


def test_a_listed_file_that_is_not_there_is_never_an_unreadable_image(make_dataset):
    """Read where its folder is not (another node), a data set is missing, not broken:
    skipping would train on whatever happened to be there, and a decoded set with such
    "unreadable" rows would be cached as complete."""
    from training.shards import _decode_rows

    root = make_dataset(per_class=6)
    index = data.discover(root)
    (root / "class_1" / "002.png").unlink()  # gone after the listing
    for policy in ("fail", "skip"):
        with pytest.raises(data.ListedFileMissing, match="listed file not found on node .*002"):
            data.decode(index, 16, policy)
    batch = {"id": np.arange(2), "label": np.zeros(2), "path": np.array(["class_1/002.png"] * 2)}
    with pytest.raises(data.ListedFileMissing):
        _decode_rows(batch, str(root), 16)
