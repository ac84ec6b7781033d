"""services/store/storage.py against a real SeaweedFS S3 server (the session's ``s3_server``):
the S3 store (with and without a key prefix), the local store doing the same, dataset
and file fetching into the cache, wrong credentials, and Ray's pyarrow filesystem."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from services.store import fetch, storage
from services.store.fetch import dataset_index, fetch_dataset, fetch_file, object_reader
from services.store.storage import LocalStore, S3Store, StoreError, open_store

pytestmark = pytest.mark.integration


# ----------------------------------------------------------------- helpers
@pytest.fixture
def s3_settings(s3_server, settings_for):
    """Settings pointing at the test server: ``s3_settings(store_url, **overrides)``."""

    def make(store_url: str | None = None, **kw):
        kw.setdefault("s3_endpoint", s3_server.endpoint)
        kw.setdefault("s3_access_key", s3_server.access_key)
        kw.setdefault("s3_secret_key", s3_server.secret_key)
        kw.setdefault("s3_region", s3_server.region)
        return settings_for(store_url=store_url, **kw)

    return make


@pytest.fixture
def bucket(s3_server, request):
    """A fresh, created bucket for this test."""
    name = s3_server.bucket_name(request.node.originalname[5:20])
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_calls(monkeypatch):
    """Counts the S3 operations of every boto3 client services.store.storage and
    services.store.fetch make."""
    calls: Counter[str] = Counter()
    real = storage.s3_client

    def counting(settings):
        client = real(settings)
        client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
        return client

    monkeypatch.setattr(storage, "s3_client", counting)
    monkeypatch.setattr(fetch, "s3_client", counting)
    return calls


def raw_keys(s3_server, bucket: str, prefix: str = "") -> list[str]:
    pages = (
        s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def upload_tree(s3_server, folder: Path, bucket: str, prefix: str) -> dict[str, bytes]:
    """Upload every file under ``folder`` to s3://bucket/prefix/...; {relative path: bytes}."""
    client, files = s3_server.client(), {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            files[rel] = p.read_bytes()
            client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=files[rel])
    return files


def local_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------- the S3 store
def test_open_store_creates_the_bucket_and_is_idempotent(s3_server, s3_settings):
    name = s3_server.bucket_name("open")
    assert name not in {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}
    store = open_store(s3_settings(f"s3://{name}/runs/"))
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (name, "runs", f"s3://{name}/runs")
    assert name in {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}
    store.put_bytes("x", b"1")
    again = open_store(s3_settings(f"s3://{name}/runs"))  # the bucket exists: kept as is
    assert again.get_bytes("x") == b"1"


@pytest.mark.parametrize("prefix", ["", "some/prefix"], ids=["no-prefix", "prefix"])
def test_put_get_exists_list_delete(s3_server, s3_settings, bucket, prefix):
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    store = open_store(s3_settings(url))
    base = f"{prefix}/" if prefix else ""
    # an object beside the store's prefix: a prefixed store never sees or touches it
    s3_server.client().put_object(Bucket=bucket, Key="outside/keep.txt", Body=b"keep")
    keys = {
        "models/m/v1/model.pt": b"weights",
        "models/m/v1/metrics.json": b"{}",
        "models/m/v10/model.pt": b"other run",
        "models/m/v1x": b"sibling file",
    }
    for key, data in keys.items():
        uri = store.put_bytes(key, data)
        assert uri == f"s3://{bucket}/{base}{key}" == store.uri(key)
    assert raw_keys(s3_server, bucket, base + "models/") == sorted(base + k for k in keys)
    for key, data in keys.items():
        assert store.get_bytes(key) == data
        assert store.exists(key)
    assert not store.exists("models/m/v1")  # a "folder" is not an object
    assert not store.exists("models/m/v2/model.pt")
    store.put_bytes("models/m/v1/model.pt", b"new weights")  # overwrite
    assert store.get_bytes("models/m/v1/model.pt") == b"new weights"

    assert store.list("models/m/v1") == ["models/m/v1/metrics.json", "models/m/v1/model.pt"]
    assert store.list("models/m/v1/") == store.list("models/m/v1")
    assert store.list("models/m/v1x") == ["models/m/v1x"]
    assert store.list("models/m/v") == []
    assert store.list("models") == sorted(keys)
    everything = sorted(keys) + ([] if prefix else ["outside/keep.txt"])
    assert store.list("") == sorted(everything)

    store.delete_prefix("models/m/v1")  # not v10/, not v1x
    assert store.list("models") == ["models/m/v10/model.pt", "models/m/v1x"]
    with pytest.raises(StoreError, match="no object"):
        store.get_bytes("models/m/v1/model.pt")
    store.delete_prefix("models/m/nothing-here")  # no error
    store.delete_prefix("models")
    assert store.list("") == ([] if prefix else ["outside/keep.txt"])
    assert store.url == url
    assert raw_keys(s3_server, bucket, "outside/") == ["outside/keep.txt"]


def test_prefixed_store_delete_all_keeps_the_rest_of_the_bucket(s3_server, s3_settings, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="other/a", Body=b"a")
    s3_server.client().put_object(Bucket=bucket, Key="app-old/a", Body=b"a")  # "app" + more
    store = open_store(s3_settings(f"s3://{bucket}/app"))
    store.put_bytes("a/b", b"1")
    store.put_bytes("c", b"2")
    assert store.list("") == ["a/b", "c"]
    store.delete_prefix("")
    assert store.list("") == []
    assert raw_keys(s3_server, bucket) == ["app-old/a", "other/a"]


def test_folder_markers_are_not_listed_but_are_deleted(s3_server, s3_settings, bucket):
    store = open_store(s3_settings(f"s3://{bucket}/p"))
    client = s3_server.client()
    for marker in ("p/checkpoints/", "p/checkpoints/1/", "p/checkpoints/1/sub/"):
        client.put_object(Bucket=bucket, Key=marker, Body=b"")
    store.put_bytes("checkpoints/1/sub/state.pkl", b"s")
    store.put_bytes("checkpoints/10/state.pkl", b"t")
    assert store.list("checkpoints") == ["checkpoints/1/sub/state.pkl", "checkpoints/10/state.pkl"]
    store.delete_prefix("checkpoints/1")  # what a fresh run of job 1 does
    assert raw_keys(s3_server, bucket) == ["p/checkpoints/", "p/checkpoints/10/state.pkl"]


def test_upload_failure_is_a_one_line_store_error(s3_server, s3_settings, bucket):
    store = open_store(s3_settings(f"s3://{bucket}/x"))
    for key, code in (("k" * 1100, "KeyTooLong"), ("a/../b", "InvalidRequest")):
        with pytest.raises(StoreError) as info:  # refused by the server
            store.put_bytes(key, b"data")
        message = str(info.value)
        assert message.startswith(f"upload of s3://{bucket}/x/{key} failed: {code}")
        assert "\n" not in message
    assert store.list("") == []

    from tests.s3server import free_ports

    down = s3_settings(s3_endpoint=f"http://127.0.0.1:{free_ports(1)[0]}")  # nobody there
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=r"^upload of s3://\S+/x/k failed: Could not connect"):
        S3Store(f"s3://{bucket}/x", down).put_bytes("k", b"data")  # after the retries
    assert time.monotonic() - t0 < 30
    missing = s3_server.bucket_name("never-made")
    with pytest.raises(StoreError, match="cannot list .*NoSuchBucket"):
        S3Store(f"s3://{missing}/x", s3_settings()).list("")


@pytest.mark.parametrize("wrong", ["secret", "access"])
def test_wrong_credentials_fail_fast_and_clearly(s3_server, s3_settings, bucket, wrong):
    bad = (
        {"s3_secret_key": "not-the-secret"} if wrong == "secret" else {"s3_access_key": "AKNOBODY"}
    )
    settings = s3_settings(f"s3://{bucket}/p", **bad)
    code = "SignatureDoesNotMatch" if wrong == "secret" else "InvalidAccessKeyId"
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=rf"cannot open bucket '{bucket}'.*access denied"):
        open_store(settings)
    store = S3Store(f"s3://{bucket}/p", settings)
    with pytest.raises(StoreError, match=rf"upload of .* failed: {code}.*access denied"):
        store.put_bytes("k", b"v")
    with pytest.raises(StoreError, match="access denied"):
        store.get_bytes("k")
    with pytest.raises(StoreError, match="access denied"):
        store.exists("k")  # not a silent False
    with pytest.raises(StoreError, match=code):
        store.list("")
    with pytest.raises(StoreError, match="cannot list s3://.*access denied"):
        fetch_dataset(f"s3://{bucket}/datasets/b1/", settings)
    with pytest.raises(StoreError, match="cannot fetch s3://.*access denied"):
        fetch_file(f"s3://{bucket}/w.pt", settings)
    assert time.monotonic() - t0 < 10, "auth errors must not be retried"


# ----------------------------------------------------------------- both stores alike
def _transcript(store) -> list:
    """The same sequence of operations; what each returned (or which error it raised)."""
    out: list = []

    def step(name, fn, *args):
        try:
            result = fn(*args)
        except StoreError:
            result = "StoreError"
        out.append((name, *args, result))

    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "a/b/c.txt", b"1")
    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "a/b/d.txt", b"22")
    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "a/bc.txt", b"3")
    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "z.bin", b"\x00\xff")
    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "a/b/c.txt", b"one")
    step("get", store.get_bytes, "a/b/c.txt")
    step("get", store.get_bytes, "z.bin")
    step("get", store.get_bytes, "a/missing")
    for key in ("a/b/c.txt", "a/b", "a/bc.txt", "nope"):
        step("exists", store.exists, key)
    for prefix in ("", "a", "a/b", "a/b/", "a/bc.txt", "a/b/c.txt", "nope", "a/b/c"):
        step("list", store.list, prefix)
    step("uri", lambda k: store.uri(k).endswith("/a/b/c.txt"), "a/b/c.txt")
    step("delete", store.delete_prefix, "a/b")
    step("list", store.list, "")
    step("delete", store.delete_prefix, "does/not/exist")
    step("delete", store.delete_prefix, "a/bc.txt")
    step("list", store.list, "")
    step("delete", store.delete_prefix, "")
    step("list", store.list, "")
    step("put", lambda k, d: store.put_bytes(k, d).endswith("/" + k), "again", b"x")
    step("list", store.list, "")
    return out


EXPECTED = [
    ("put", "a/b/c.txt", b"1", True),
    ("put", "a/b/d.txt", b"22", True),
    ("put", "a/bc.txt", b"3", True),
    ("put", "z.bin", b"\x00\xff", True),
    ("put", "a/b/c.txt", b"one", True),
    ("get", "a/b/c.txt", b"one"),
    ("get", "z.bin", b"\x00\xff"),
    ("get", "a/missing", "StoreError"),
    ("exists", "a/b/c.txt", True),
    ("exists", "a/b", False),
    ("exists", "a/bc.txt", True),
    ("exists", "nope", False),
    ("list", "", ["a/b/c.txt", "a/b/d.txt", "a/bc.txt", "z.bin"]),
    ("list", "a", ["a/b/c.txt", "a/b/d.txt", "a/bc.txt"]),
    ("list", "a/b", ["a/b/c.txt", "a/b/d.txt"]),
    ("list", "a/b/", ["a/b/c.txt", "a/b/d.txt"]),
    ("list", "a/bc.txt", ["a/bc.txt"]),
    ("list", "a/b/c.txt", ["a/b/c.txt"]),
    ("list", "nope", []),
    ("list", "a/b/c", []),
    ("uri", "a/b/c.txt", True),
    ("delete", "a/b", None),
    ("list", "", ["a/bc.txt", "z.bin"]),
    ("delete", "does/not/exist", None),
    ("delete", "a/bc.txt", None),
    ("list", "", ["z.bin"]),
    ("delete", "", None),
    ("list", "", []),
    ("put", "again", b"x", True),
    ("list", "", ["again"]),
]


@pytest.mark.parametrize("kind", ["local", "s3", "s3-prefix"])
def test_local_and_s3_stores_behave_the_same(kind, tmp_path, s3_server, s3_settings):
    if kind == "local":
        store = open_store(s3_settings(str(tmp_path / "store")))
        assert isinstance(store, LocalStore)
    else:
        name = s3_server.bucket_name("same")
        url = f"s3://{name}" + ("/deep/prefix" if kind == "s3-prefix" else "")
        store = open_store(s3_settings(url))
        assert isinstance(store, S3Store)
    assert _transcript(store) == EXPECTED


# ----------------------------------------------------------------- Ray's storage
def test_ray_storage_is_a_working_pyarrow_filesystem(
    s3_server, s3_settings, bucket, tmp_path, monkeypatch
):
    from pyarrow import fs as pafs

    store = open_store(s3_settings(f"s3://{bucket}/some/prefix"))
    path, filesystem = store.ray_storage("checkpoints")
    assert path == f"{bucket}/some/prefix/checkpoints"
    assert isinstance(filesystem, pafs.PyFileSystem)  # services/store/node_fs.py
    with filesystem.open_output_stream(f"{path}/run-1/checkpoint_000/model.pt") as out:
        out.write(b"checkpoint bytes")
    with filesystem.open_input_stream(f"{path}/run-1/checkpoint_000/model.pt") as src:
        assert src.read() == b"checkpoint bytes"
    # as a Train worker or a trial gets it: pickled without the secret, which it reads
    # from its node's settings
    import pickle

    blob = pickle.dumps(filesystem)
    assert s3_server.secret_key.encode() not in blob
    monkeypatch.setenv("COLECIONADOR_S3_SECRET_KEY", s3_server.secret_key)  # the node's
    with pickle.loads(blob).open_input_stream(f"{path}/run-1/checkpoint_000/model.pt") as src:
        assert src.read() == b"checkpoint bytes"
    filesystem.create_dir(f"{path}/run-1/empty")  # pyarrow writes a folder marker
    info = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    assert f"{path}/run-1/checkpoint_000/model.pt" in {i.path for i in info if i.is_file}
    # the same object through the store
    assert store.list("checkpoints") == ["checkpoints/run-1/checkpoint_000/model.pt"]
    assert store.get_bytes("checkpoints/run-1/checkpoint_000/model.pt") == b"checkpoint bytes"
    store.delete_prefix("checkpoints/run-1")
    assert raw_keys(s3_server, bucket, "some/prefix/checkpoints/run-1") == []
    local_dir, no_filesystem = LocalStore(tmp_path / "st").ray_storage("checkpoints")
    assert no_filesystem is None and Path(local_dir).is_dir()


def test_a_trials_out_of_fold_checkpoint_reads_back_from_s3(s3_settings, bucket, tmp_path):
    """A tune job's label check reads its winner's oof.npz where Tune stored it: the
    run's storage in the store (tuning.search load_out_of_fold with the pyarrow S3 fs)."""
    import numpy as np

    from tuning.cv import OOF_FILE, save_out_of_fold
    from tuning.search import TrialOutcome, load_out_of_fold

    store = open_store(s3_settings(f"s3://{bucket}/p"))
    path, filesystem = store.ray_storage("tuning")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), 5)
    local = save_out_of_fold(str(tmp_path), np.array([0, 3, 4, 8, 9]), probs)
    checkpoint = f"{path}/job-1-run-1/trial_0/checkpoint_000004"
    with filesystem.open_output_stream(f"{checkpoint}/{OOF_FILE}") as out:
        out.write(Path(local).read_bytes())
    outcome = TrialOutcome(0, "t0", {}, "completed", oof_checkpoint=checkpoint)
    index, got = load_out_of_fold(outcome, filesystem)
    assert index.tolist() == [0, 3, 4, 8, 9] and np.allclose(got, probs, atol=1e-6)


# ----------------------------------------------------------------- fetching
def test_fetch_dataset_downloads_once_then_only_changes(
    s3_server, s3_settings, bucket, make_dataset, s3_calls
):
    folder = make_dataset("ds", classes=3, per_class=4, size=8)
    files = upload_tree(s3_server, folder, bucket, "datasets/batch-1")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="datasets/batch-1/", Body=b"")  # a folder marker
    client.put_object(Bucket=bucket, Key="datasets/batch-1/class_0/", Body=b"")
    client.put_object(Bucket=bucket, Key="datasets/batch-10/class_0/x.png", Body=b"other")
    settings = s3_settings()
    uri = f"s3://{bucket}/datasets/batch-1/"

    dest = fetch_dataset(uri, settings)
    assert dest.is_dir() and settings.cache_dir in dest.parents
    assert local_tree(dest) == files
    assert sorted(p.name for p in dest.iterdir()) == ["class_0", "class_1", "class_2"]
    assert s3_calls["GetObject"] == len(files) == 12
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")}

    s3_calls.clear()
    assert fetch_dataset(uri.rstrip("/"), settings) == dest  # same copy, no trailing /
    assert s3_calls["GetObject"] == 0 and s3_calls["HeadObject"] == 0
    assert set(s3_calls) == {"ListObjectsV2"}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")} == stamps

    # one image replaced by another of the same size, one deleted, one added
    changed = "class_1/000.png"
    new_bytes = bytes(reversed(files[changed]))
    client.put_object(Bucket=bucket, Key=f"datasets/batch-1/{changed}", Body=new_bytes)
    client.delete_object(Bucket=bucket, Key="datasets/batch-1/class_2/003.png")
    client.put_object(
        Bucket=bucket, Key="datasets/batch-1/class_3/000.png", Body=files["class_0/000.png"]
    )
    s3_calls.clear()
    fetch_dataset(uri, settings)
    assert s3_calls["GetObject"] == 2
    expected = dict(files, **{changed: new_bytes, "class_3/000.png": files["class_0/000.png"]})
    del expected["class_2/003.png"]
    assert local_tree(dest) == expected


def test_jobs_copying_one_set_at_once_copy_it_once(
    s3_server, s3_settings, bucket, make_dataset, s3_calls
):
    """Four copiers of the same S3 set at once (threads: flock excludes them as it does
    processes): one downloads, the others wait and find the copy complete; none deletes
    another's half-downloaded file."""
    import threading

    folder = make_dataset("ds", classes=3, per_class=4, size=8)
    files = upload_tree(s3_server, folder, bucket, "datasets/shared")
    settings = s3_settings()
    uri = f"s3://{bucket}/datasets/shared/"
    start, got, errors = threading.Barrier(4), [], []

    def job() -> None:
        start.wait(30)
        try:
            got.append(fetch_dataset(uri, settings))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(got)) == 1
    assert local_tree(got[0]) == files
    assert s3_calls["GetObject"] == len(files)  # each object once


def test_fetch_dataset_empty_prefix_or_missing_bucket(s3_server, s3_settings, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="datasets/other/a.png", Body=b"x")
    s3_server.client().put_object(Bucket=bucket, Key="datasets/only-marker/", Body=b"")
    settings = s3_settings()
    for batch in ("none", "only-marker"):
        with pytest.raises(
            FileNotFoundError,
            match=rf"dataset not found: no objects under "
            rf"s3://{bucket}/datasets/{batch}/$",
        ):
            fetch_dataset(f"s3://{bucket}/datasets/{batch}", settings)
    missing = s3_server.bucket_name("nobucket")
    with pytest.raises(FileNotFoundError, match=f"no bucket '{missing}'"):
        fetch_dataset(f"s3://{missing}/datasets/b/", settings)
    with pytest.raises(ValueError, match="unsupported dataset URI"):
        fetch_dataset("gs://bucket/datasets/b/", settings)


def test_a_large_s3_dataset_is_listed_not_downloaded_and_read_as_listed(
    s3_server, s3_settings, bucket, make_dataset, s3_calls
):
    folder = make_dataset("ds", classes=2, per_class=3, size=8)
    files = upload_tree(s3_server, folder, bucket, "datasets/big")
    uri = f"s3://{bucket}/datasets/big/"
    large = s3_settings(stream_min_images=6)
    index = dataset_index(uri, large)
    assert index.remote and index.source == uri and len(index) == 6
    assert index.relative() == sorted(files)
    assert set(s3_calls) == {"ListObjectsV2"}  # no object read
    assert not (large.cache_dir / "datasets").exists()

    reader = object_reader(index, large)  # what the decode tasks read with
    first = index.relative()[0]
    assert reader.read(first, index.etags[0], 10**6) == files[first]
    assert len(reader.read(first, index.etags[0], 10)) == 11  # at most limit + 1 bytes
    s3_server.client().put_object(
        Bucket=bucket, Key=f"datasets/big/{first}", Body=files[first] + b"!"
    )
    with pytest.raises(OSError, match="changed since the data set was listed"):
        reader.read(first, index.etags[0], 10**6)  # never the bytes of another version
    s3_server.client().delete_object(Bucket=bucket, Key=f"datasets/big/{first}")
    with pytest.raises(FileNotFoundError, match="no longer in the bucket"):
        reader.read(first, index.etags[0], 10**6)

    manifest = "path,label\nclass_1/000.png,b\nclass_0/001.png,a\n"
    s3_server.client().put_object(
        Bucket=bucket, Key="datasets/big/manifest.csv", Body=manifest.encode()
    )
    listed = dataset_index(uri, s3_settings(stream_min_images=2))
    assert listed.relative() == ["class_1/000.png", "class_0/001.png"]
    assert listed.classes == ["a", "b"] and listed.labels.tolist() == [1, 0]

    small = dataset_index(uri, s3_settings(stream_min_images=3))  # 2 rows: copied, as before
    assert not small.remote and large.cache_dir in small.root.parents
    assert [p.relative_to(small.root).as_posix() for p in small.paths] == listed.relative()


def test_fetch_file_from_s3(s3_server, s3_settings, bucket, s3_calls):
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="weights/backbone.pt", Body=b"w1" * 1000)
    settings = s3_settings()
    uri = f"s3://{bucket}/weights/backbone.pt"
    path = fetch_file(uri, settings)
    assert path.name == "backbone.pt" and path.read_bytes() == b"w1" * 1000
    assert settings.cache_dir in path.parents
    assert s3_calls["GetObject"] == 1

    s3_calls.clear()
    assert fetch_file(uri, settings) == path  # cached: a HEAD, no download
    assert s3_calls["GetObject"] == 0

    client.put_object(Bucket=bucket, Key="weights/backbone.pt", Body=b"w2" * 1000)
    s3_calls.clear()
    assert fetch_file(uri, settings).read_bytes() == b"w2" * 1000  # changed: fetched again
    assert s3_calls["GetObject"] == 1

    with pytest.raises(FileNotFoundError, match=f"file not found: s3://{bucket}/nope.pt"):
        fetch_file(f"s3://{bucket}/nope.pt", settings)
    with pytest.raises(ValueError, match="unsupported URI"):
        fetch_file(f"s3://{bucket}/weights/", settings)
    local = path.parent / "copy.pt"
    local.write_bytes(b"local")
    assert fetch_file(local.as_uri(), settings) == local
