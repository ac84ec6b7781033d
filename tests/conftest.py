"""Shared fixtures: real PostgreSQL (a fresh database per session), one local Ray cluster
per session (stopped here), fresh RabbitMQ queue names, and small made-up datasets."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings
from PIL import Image

# Property tests draw the same examples on every run (a clean clone never fails by chance);
# HYPOTHESIS_PROFILE=explore draws new ones, and what it finds is kept as an @example.
hypothesis_settings.register_profile("suite", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, max_examples=2000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

PG_ADMIN_URL = os.environ.get(
    "COLECIONADOR_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("COLECIONADOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SESSION = uuid.uuid4().hex[:8]
PROMOTIONS_QUEUE = f"ModelPromoted.test-{SESSION}"

# A tiny, fast recipe: the smallest torchvision classifier, small images, 1 + 1 epochs.
TINY = {
    "backbone": "mobilenet_v3_small",
    "image_size": 32,
    "batch_size": 8,
    "phase1_epochs": 1,
    "phase2_epochs": 1,
    "unfreeze_last": 5,
    "min_per_class": 5,
    "hflip": False,
    "gate_accuracy": 0.0,
    "gate_precision": 0.0,
    "gate_recall": 0.0,
    "export_onnx": False,
}  # 7-15 s a job here: test_job's first test exports


# The tiny models of the suite are judged by gates of 0 (TINY): the operator's floor, which
# a request may not go below, is 0 here (for every process the tests start, and for the
# settings module-scoped fixtures make); tests of the floor set their own.
OPERATOR_FLOOR = {f"COLECIONADOR_GATE_MIN_{m}": "0" for m in ("ACCURACY", "PRECISION", "RECALL")}


@pytest.fixture(scope="session", autouse=True)
def _operator_floor():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in OPERATOR_FLOOR.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads the developer's ~/.colecionador or COLECIONADOR_* settings."""
    for k in list(os.environ):
        if k.startswith("COLECIONADOR_") and not k.startswith("COLECIONADOR_TEST_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("COLECIONADOR_HOME", str(tmp_path / "home"))
    for k, v in OPERATOR_FLOOR.items():
        monkeypatch.setenv(k, v)
    # ModelPromoted events of tests that publish go to this session's queue, not the real one
    monkeypatch.setenv("COLECIONADOR_PROMOTIONS_QUEUE", PROMOTIONS_QUEUE)


@pytest.fixture(scope="session", autouse=True)
def _promotions_queue_dropped():
    yield
    from tests.amqp import delete_queues

    delete_queues(PROMOTIONS_QUEUE)


@contextlib.contextmanager
def fresh_database(name: str):
    """A new PostgreSQL database for the block, dropped after it (with its connections)."""
    from sqlalchemy import create_engine, text

    from services.db.session import get_engine

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_database(f"colecionador_test_{SESSION}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Each test that touches the database runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """One local Ray cluster for the session, started as a user starts one (``ray start
    --head`` with token auth, the job server and the HAProxy ingress, tests/raycluster.py);
    this process joins it as a driver with the token. Only this cluster is stopped at the
    end. Its node holds the secrets (the S3 server's secret key) in
    COLECIONADOR_SECRETS_DIR, as an operator's nodes do: they never travel in a Ray job's
    runtime_env."""
    import ray

    from services.api import haproxy
    from tests.raycluster import LocalRayCluster

    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "colecionador_s3_secret_key").write_text(s3_server.secret_key)
    # Serve's HTTP ingress is Ray's HAProxy, as docs/guide/serving.md tells operators to start Ray
    ingress = haproxy.node_env() if haproxy.installed() else {}
    # A replaced or deleted replica behind HAProxy stays reachable for Ray's drain window
    # (30 s by default) before it stops: 1 s here, where no load balancer needs the time
    drain = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    cluster = LocalRayCluster(
        num_cpus=2, env={"COLECIONADOR_SECRETS_DIR": str(secrets), **ingress, **drain}
    )
    cluster.secrets_dir = secrets  # give_node writes more there
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    # Ray caches its auth mode and token per process (a module imported at collection
    # may have read them already): refresh both, as Ray's own test utilities do.
    from ray._private.authentication_test_utils import reset_auth_token_state

    reset_auth_token_state()
    try:
        ray.init(address=cluster.address, logging_level="WARNING", configure_logging=True)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        haproxy.discard(ingress)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def give_node(cluster, settings=None, **env: str) -> None:
    """Give the cluster's node the secrets of ``settings`` (every value that stays on the
    node: services/replica_settings.py) and ``env``'s COLECIONADOR_* secrets, as files of
    its COLECIONADOR_SECRETS_DIR, as an operator gives every node: a Serve replica reads
    them there and checks them against the fingerprints of the process that deployed it."""
    from pydantic import SecretStr

    from services.config import Settings
    from services.replica_settings import SECRET_FIELDS, stays_on_node

    given = {}
    if settings is not None:
        for name in Settings.model_fields:
            value = getattr(settings, name)
            if value is not None and stays_on_node(name, value):
                given[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    for key, value in env.items():
        name = key.removeprefix("COLECIONADOR_").lower()
        typed = SecretStr(value) if name in SECRET_FIELDS else value
        if name in Settings.model_fields and stays_on_node(name, typed):
            given[name] = value
    for name, value in given.items():
        path = cluster.secrets_dir / f"colecionador_{name}"
        path.write_text(str(value))
        path.chmod(0o600)


def cli_env(settings, cluster, write_token: str, read_token: str) -> dict[str, str]:
    """The environment of a ``colecionador`` command run as a subprocess against the
    session's cluster with these settings: this process's environment without its own
    COLECIONADOR_ variables, the settings', the tokens and Ray's token auth."""
    from services.jobs.ray_jobs import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("COLECIONADOR_")}
    env.update(
        settings_env(settings),
        COLECIONADOR_RAY_ADDRESS=cluster.address,
        COLECIONADOR_API_TOKEN=write_token,
        COLECIONADOR_API_READ_TOKEN=read_token,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(cluster.token_path),
    )
    if settings.s3_secret_key is not None:
        env["COLECIONADOR_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return env


def wait_until(predicate, timeout: float, what: str, every: float = 0.2):
    """The predicate's first truthy value, polled every ``every`` s; TimeoutError after
    ``timeout`` s naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not within {timeout} s")


@pytest.fixture
def queues():
    """Fresh request and event queue names, deleted afterwards (with the dead letters)."""
    from tests.amqp import delete_queues

    requests = f"training.requests.test-{SESSION}-{uuid.uuid4().hex[:6]}"
    events = f"ModelEvaluation.test-{SESSION}-{uuid.uuid4().hex[:6]}"
    yield requests, events
    delete_queues(requests, requests + ".dead", events)


@pytest.fixture
def own_database():
    """A PostgreSQL database of the test's own: an ingress's reconciler takes every queued
    job it finds, so tests that run one keep out of the session's database."""
    with fresh_database(f"colecionador_own_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture
def events_queue():
    """A fresh ModelEvaluation queue name, deleted afterwards."""
    name = f"ModelEvaluation.test-{SESSION}-{uuid.uuid4().hex[:6]}"
    yield name
    import asyncio

    import aio_pika

    async def drop():
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            await ch.queue_delete(name)

    try:
        asyncio.run(drop())
    except Exception:  # noqa: BLE001 - the queue may never have been declared
        pass


@pytest.fixture
def settings_for(tmp_path):
    from services.config import Settings

    def make(database_url: str | None = None, **kw) -> Settings:
        kw.setdefault("publish_events", False)
        kw.setdefault("broker_url", AMQP_URL)
        kw.setdefault("dataset_roots", f"{tmp_path},s3://d")  # made-up data, example URIs
        return Settings(home=tmp_path / "home", database_url=database_url, workers=2, **kw)

    return make


def _pattern(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Class 0: horizontal bars, 1: vertical bars, 2: a bright square, 3+: checkers."""
    img = np.zeros((size, size), np.float32)
    if kind == 0:
        img[::4, :] = 1
        img[1::4, :] = 1
    elif kind == 1:
        img[:, ::4] = 1
        img[:, 1::4] = 1
    elif kind == 2:
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    else:
        k = kind - 1
        img[(np.add.outer(np.arange(size) // k, np.arange(size) // k) % 2) == 0] = 1
    img = np.clip(img * 0.8 + rng.normal(0, 0.1, img.shape), 0, 1)
    return (img * 255).astype(np.uint8)


def write_dataset(
    root: Path,
    classes: int = 3,
    per_class: int | list[int] = 12,
    size: int = 16,
    corrupt: int = 0,
    seed: int = 0,
) -> Path:
    """An ImageFolder of made-up, learnable grey images under ``root``."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, list) else [per_class] * classes
    for c, n in enumerate(counts):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_pattern(c, size, rng)).save(folder / f"{i:03d}.png")
    for i in range(corrupt):
        (root / "class_0" / f"broken_{i}.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.fixture
def make_dataset(tmp_path) -> Callable[..., Path]:
    """``make_dataset(per_class=..., corrupt=...)``: write_dataset under this test's tmp."""

    def make(name: str = "data", **kw) -> Path:
        return write_dataset(tmp_path / name, **kw)

    return make


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 server for the session (tests/s3server.py), one admin identity.

    Has ``endpoint``, ``access_key``, ``secret_key``, ``region``, ``client()`` (boto3) and
    ``bucket_name(hint)``: a fresh bucket name, unique in this session (not yet created).
    """
    from tests.s3server import SeaweedS3

    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` for the session (tests/mlflowserver.py): SQLite backend,
    artifacts proxied into a temp folder. Each test names its own models (experiments)."""
    from tests.mlflowserver import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server
