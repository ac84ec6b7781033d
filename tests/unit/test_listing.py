"""A data set listed from an object store (keys, sizes, ETags), never downloaded: the same
layouts, rules and errors as a local folder's listing, a version key every driver shares,
and decode tasks that read each object through a reader with the same trust checks."""

from __future__ import annotations

import hashlib
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import ClientError

from services.store.fetch import S3ObjectReader, object_reader
from services.store.storage import StoreError
from tests.conftest import write_dataset
from training import data
from training.shards import _decode_rows

SOURCE = "s3://bucket/datasets/b1/"


def _objects(root: Path) -> list[tuple[str, int, str]]:
    """(key relative to the prefix, size, ETag) of every file under ``root``, as S3 lists
    them (in key order, ETag the quoted MD5 of a single-part upload)."""
    out = []
    for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if p.is_file():
            raw = p.read_bytes()
            out.append(
                (p.relative_to(root).as_posix(), len(raw), f'"{hashlib.md5(raw).hexdigest()}"')
            )
    return out


class DictReader:
    """An ObjectReader over a dict of name -> bytes, counting what it reads."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs, self.reads = blobs, []

    def read(self, name: str, etag: str, limit: int) -> bytes:
        self.reads.append(name)
        if name not in self.blobs:
            raise FileNotFoundError("no longer in the bucket")
        return self.blobs[name][: limit + 1]


def test_an_imagefolder_listing_is_the_folders_listing(tmp_path):
    root = write_dataset(tmp_path / "d", classes=3, per_class=4, size=8)
    (root / "class_1" / "nested").mkdir()
    (root / "class_1" / "nested" / "x.PNG").write_bytes(b"x")
    (root / "class_1" / "b.png-notes.txt").write_text("not an image")
    (root / "top.png").write_bytes(b"not in a class")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "a.png").write_bytes(b"hidden folder: not a class")
    local = data.discover(root)
    remote = data.discover_listing(SOURCE, _objects(root))
    assert remote.remote and not local.remote
    assert remote.classes == local.classes == ["class_0", "class_1", "class_2"]
    assert remote.relative() == local.relative()  # same order: ids are positions
    assert np.array_equal(remote.labels, local.labels)
    assert remote.paths == [] and len(remote) == 13
    sizes = {rel: n for rel, n, _ in _objects(root)}
    assert remote.sizes == [sizes[rel] for rel in remote.relative()]


def test_a_manifest_listing_keeps_its_rows_and_stays_inside_the_prefix():
    objects = [("img/a.png", 10, '"e1"'), ("img/b.png", 20, '"e2"'), ("manifest.csv", 5, '"m"')]
    text = "path,label\nimg/b.png,dog\nimg/a.png,cat\nimg/gone.png,cat\n"
    index = data.discover_listing(SOURCE, objects, text)
    assert index.relative() == ["img/b.png", "img/a.png", "img/gone.png"]
    assert index.classes == ["cat", "dog"] and index.labels.tolist() == [1, 0, 0]
    assert index.sizes == [20, 10, -1] and index.etags == ['"e2"', '"e1"', ""]
    for bad in ("../other/x.png", "img/../../x.png", "/etc/passwd", "img//a.png", "./a.png"):
        with pytest.raises(data.DataError, match=r"line 2: .* is not a file inside"):
            data.discover_listing(SOURCE, objects, f"path,label\n{bad},a\nimg/a.png,b\n")
    with pytest.raises(data.DataError, match="must have 'path' and 'label' columns"):
        data.discover_listing(SOURCE, objects, "file,class\nimg/a.png,a\n")
    with pytest.raises(data.DataError, match="1 class; at least 2"):
        data.discover_listing(SOURCE, objects, "path,label\nimg/a.png,a\nimg/b.png,a\n")


def test_keys_that_leave_the_prefix_and_empty_listings_are_refused():
    with pytest.raises(data.DataError, match="its key leaves the dataset folder"):
        data.discover_listing(SOURCE, [("a/x.png", 1, "e"), ("a/../../x.png", 1, "e")])
    with pytest.raises(data.DataError, match="has no images"):
        data.discover_listing(SOURCE, [("a/x.txt", 1, "e"), ("top.png", 1, "e")])
    with pytest.raises(data.DataError, match="1 class"):
        data.discover_listing(SOURCE, [("a/x.png", 1, "e"), ("a/y.png", 1, "e")])


def test_the_version_key_follows_etags_not_where_the_objects_are(tmp_path):
    objects = [("a/1.png", 10, '"e1"'), ("b/2.png", 20, '"e2"')]
    key = data.fingerprint(data.discover_listing(SOURCE, objects), 32)
    for elsewhere in ("s3://other-bucket/copy/", "s3://bucket/datasets/b1-again/"):
        assert data.fingerprint(data.discover_listing(elsewhere, objects), 32) == key
    changed = [("a/1.png", 10, '"e1-rewritten"'), ("b/2.png", 20, '"e2"')]
    assert data.fingerprint(data.discover_listing(SOURCE, changed), 32) != key
    resized = [("a/1.png", 11, '"e1"'), ("b/2.png", 20, '"e2"')]
    assert data.fingerprint(data.discover_listing(SOURCE, resized), 32) != key
    relabelled = [("b/1.png", 10, '"e1"'), ("a/2.png", 20, '"e2"')]
    assert data.fingerprint(data.discover_listing(SOURCE, relabelled), 32) != key
    assert data.fingerprint(data.discover_listing(SOURCE, objects), 64) != key


def _png_claiming(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw[12:29]
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def test_decode_tasks_read_objects_with_the_same_checks_as_files(tmp_path):
    root = write_dataset(tmp_path / "d", classes=2, per_class=3, size=8)
    blobs = {rel: (root / rel).read_bytes() for rel, _, _ in _objects(root)}
    blobs["class_0/bomb.png"] = _png_claiming(20000, 20000)
    blobs["class_0/garbage.png"] = b"\x89PNG not really"
    blobs["class_1/grew.png"] = b"\x00" * (data.MAX_FILE_BYTES + 10)  # listed small
    objects = [(rel, len(b), '"e"') for rel, b in blobs.items()]
    objects.append(("class_1/huge.png", data.MAX_FILE_BYTES + 1, '"e"'))  # listed too large
    objects = [(rel, 100, e) if rel == "class_1/grew.png" else (rel, n, e) for rel, n, e in objects]
    objects.append(("class_1/gone.png", 10, '"e"'))
    index = data.discover_listing(SOURCE, objects)
    reader = DictReader(blobs)
    ids = np.arange(len(index))
    batch = {
        "id": ids,
        "label": index.labels,
        "path": np.array(index.relative()),
        "bytes": np.array(index.sizes),
        "etag": np.array(index.etags),
    }
    table = _decode_rows(batch, "unused", 16, reader=reader).to_pydict()
    errors = dict(zip(table["path"], table["error"]))
    assert "class_1/huge.png" not in reader.reads  # refused from its listed size
    assert "over the 50 MB limit" in errors["class_1/huge.png"]
    assert "over the 50 MB limit" in errors["class_1/grew.png"]  # bigger than listed
    assert "decompression bomb" in errors["class_0/bomb.png"]
    assert errors["class_0/garbage.png"].startswith("UnidentifiedImageError")
    assert errors["class_1/gone.png"] == "FileNotFoundError: no longer in the bucket"
    good = [p for p, e in errors.items() if not e]
    assert sorted(good) == sorted(rel for rel, _, _ in _objects(root))
    local = data.decode(data.discover(root), 16)
    by_path = dict(zip(table["path"], table["sha1"]))
    assert [by_path[p] for p in local.paths] == local.sha1  # the same bytes, the same hashes
    with pytest.raises(ValueError, match="remote listing"):
        data.decode(index, 16)


class _Raising:
    def __init__(self, code: str):
        self.code = code

    def get_object(self, **kw):
        raise ClientError({"Error": {"Code": self.code, "Message": "m"}}, "GetObject")


def test_the_s3_reader_tells_a_bad_object_from_a_store_it_cannot_reach():
    from services.config import Settings

    settings = Settings(
        s3_endpoint="http://127.0.0.1:1", s3_access_key="AK", s3_secret_key="very-secret"
    )
    index = data.discover_listing(SOURCE, [("a/1.png", 1, '"e"'), ("b/1.png", 1, '"e"')])
    reader = object_reader(index, settings)
    assert (reader.bucket, reader.prefix) == ("bucket", "datasets/b1/")
    assert "very-secret" not in repr(reader)
    reader._client = object()
    copy = pickle.loads(pickle.dumps(reader))  # as it travels to a decode task
    assert copy._client is None and copy.access == reader.access
    for code, kind, text in [
        ("PreconditionFailed", OSError, "changed since the data set was listed"),
        ("NoSuchKey", FileNotFoundError, "no longer in the bucket"),
        ("AccessDenied", PermissionError, "refused"),
    ]:
        bad = S3ObjectReader(reader.access, "bucket", "p/", _client=_Raising(code))
        with pytest.raises(kind, match=text):
            bad.read("a/1.png", '"e"', 10)
        assert data.decode_listed_or_reason(bad, "a/1.png", 1, '"e"', 8).startswith(
            type(kind("")).__name__
        )
    for code in ("InternalError", "SignatureDoesNotMatch"):
        down = S3ObjectReader(reader.access, "bucket", "p/", _client=_Raising(code))
        with pytest.raises(StoreError, match="cannot read s3://bucket/p/a/1.png"):
            data.decode_listed_or_reason(down, "a/1.png", 1, '"e"', 8)  # fails the decode


def test_a_store_error_in_a_decode_task_fails_the_decode_with_its_reason():
    from services.jobs.decoded_cache import _store_error_in

    # what Ray Data 2.60 raises on the driver when a map_batches task raised a StoreError:
    # a RayTaskError(UserCodeException) whose text alone carries the task's traceback
    text = (
        "ray::MapBatches(_decode_rows)->Write() (pid=1, ip=10.0.0.1)\n"
        '  File "/x/services/store/fetch.py", line 9, in read\n'
        "services.store.storage.StoreError: cannot read s3://b/p/c1/7.png: "
        "EndpointConnectionError\n"
        "\nThe above exception was the direct cause of the following exception:\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block.\n"
    )
    assert _store_error_in(RuntimeError(text)) == (
        "cannot read s3://b/p/c1/7.png: EndpointConnectionError"
    )
    assert _store_error_in(StoreError("direct")) == "direct"
    assert _store_error_in(RuntimeError("UnidentifiedImageError: not a store error")) is None
