"""One Settings object, read from the environment (prefix ``COLECIONADOR_``).

The embedded defaults put everything under ``home``: the SQLite file, the local object
store, Ray's run storage and the caches, so a new user needs no server at all.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HEAD_NODE = "node:__internal_head__"  # the resource Ray gives the head node alone


class Settings(BaseSettings):
    # Secrets (the S3 secret key, API tokens, URLs with passwords) come from the node: its
    # environment, or files named colecionador_<setting> in COLECIONADOR_SECRETS_DIR (a
    # folder the cluster is started with). They never travel in a Ray job's runtime_env.
    model_config = SettingsConfigDict(
        env_prefix="COLECIONADOR_",
        extra="ignore",
        secrets_dir=os.environ.get("COLECIONADOR_SECRETS_DIR"),
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".colecionador")
    database_url: SecretStr | None = None  # may hold a password: never printed
    auto_migrate: bool = True

    store_url: str | None = None  # a folder, file://..., or s3://bucket[/prefix]
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    broker_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    requests_queue: str = "training.requests"
    events_queue: str = "ModelEvaluation"
    promotions_queue: str = "ModelPromoted"  # alias moves (ModelPromoted events)
    publish_events: bool = True

    ray_address: str | None = None
    ray_dashboard_url: str | None = None  # for job submission, e.g. http://head:8265
    ray_auth_token_path: Path | None = None

    api_token: SecretStr | None = None  # a write token whose identity is "api"
    api_read_token: SecretStr | None = None
    # write tokens with a name each, ``ana=<token>,bob=<token>``: who moved an alias is the
    # name of the token that asked, never what a request body says
    api_writers: SecretStr | None = None
    api_upload_mb: float = Field(16.0, gt=0, le=1024)  # a predict request's body (413 beyond)

    max_job_attempts: int = Field(2, ge=1)  # Ray jobs per job: the first + resubmissions
    # wall-clock limit of one job from its first start, all attempts (the reconciler ends
    # it ``failed``); None: no limit. Default: a day
    max_job_seconds: float | None = Field(86_400.0, gt=0)
    # a search's budget: configs x folds x epochs a config trains (refused on admission)
    max_tuning_epochs: int = Field(10_000, ge=1)
    reconcile_interval_s: float = Field(5.0, gt=0)  # the ingress's reconciler and outbox

    # where a request (queue, HTTP) may point dataset_uri and weights: comma-separated local
    # folders and s3://bucket/prefix roots; default: <home>/datasets and the store's datasets/
    dataset_roots: str | None = None
    plugin_modules: str | None = None  # comma-separated modules whose callables requests name

    # data sets of at least this many listed images are decoded once into shards in the
    # store (cache/decoded/) and streamed to the workers by Ray Data; smaller ones are
    # decoded into memory per job (faster there: benchmarks/data_scale.py). 0: always stream
    stream_min_images: int = Field(8000, ge=0)
    # what one job may decode into its driver's memory (images x side^2 x 3 bytes); a set
    # over it is streamed from shards whatever its count (1024 px x 7,999 images is 25 GB)
    decode_memory_mb: float = Field(4096, gt=0)

    # the operator's floor of the quality gate: a request may ask for a stricter gate, never
    # a weaker one (refused at the edge), and the driver judges with the stricter of the two
    gate_min_accuracy: float = Field(0.90, ge=0, le=1)
    gate_min_precision: float = Field(0.88, ge=0, le=1)
    gate_min_recall: float = Field(0.88, ge=0, le=1)

    # MLflow (docs/operations/mlflow.md): every job a run, approved versions registered with
    # their aliases; None: no MLflow. May hold credentials: then it stays on the node
    mlflow_tracking_uri: SecretStr | None = None
    # one MLflow request's limit (whole seconds, as MLflow reads it), never retried by the
    # client: what was not written waits in the outbox (mlflow_outbox) for the next drain
    mlflow_timeout_s: int = Field(5, ge=1, le=120)

    workers: int = Field(2, ge=1)
    # None (the default): a GPU per worker when the cluster has GPUs; true or false forces it
    use_gpu: bool | None = None
    max_failures: int = Field(1, ge=-1)
    # Ray resources every Train worker asks for beside its CPU (or GPU), e.g. a node type's
    # custom resource {"gpu_node": 1} to keep training on those nodes: JSON in
    # COLECIONADOR_WORKER_RESOURCES
    worker_resources: dict[str, float] = Field(default_factory=dict)
    # where Serve places the replicas, as Ray resources each asks for (JSON): the API's on
    # the head by default, whose node holds the settings, beside the ingress actor; the
    # predict applications' anywhere, or e.g. {"gpu_node": 0.01} on a node type
    api_resources: dict[str, float] = Field(default_factory=lambda: {HEAD_NODE: 0.001})
    # where a job's driver runs (the Ray job's entrypoint_resources; it reserves no CPU, so
    # it never takes one from a Train worker): the head by default, the node that holds
    # the local data sets it lists and decodes
    driver_resources: dict[str, float] = Field(default_factory=lambda: {HEAD_NODE: 0.001})
    predict_resources: dict[str, float] = Field(default_factory=dict)
    # at most this many replicas of one model on a node (Serve's max_replicas_per_node):
    # 1 spreads a model's replicas over the nodes, so one node lost takes one replica;
    # None: Serve places them where they fit
    predict_max_replicas_per_node: int | None = Field(None, ge=1, le=100)

    @cached_property
    def resolved_home(self) -> Path:
        home = self.home.expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def db_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.resolved_home / 'colecionador.db'}"

    @property
    def mlflow_uri(self) -> str | None:
        """The MLflow tracking URI (it may hold a password: use it, never print it)."""
        uri = self.mlflow_tracking_uri
        return uri.get_secret_value() if uri is not None else None

    @property
    def amqp_url(self) -> str:
        """The broker's URL (it may hold a password: use it, never print it)."""
        return self.broker_url.get_secret_value()

    @property
    def store(self) -> str:
        return self.store_url or str(self.resolved_home / "store")

    def data_roots(self) -> list[str]:
        """The roots a request's dataset_uri and weights may lie under."""
        if self.dataset_roots:
            return [r.strip() for r in self.dataset_roots.split(",") if r.strip()]
        return [str(self.resolved_home / "datasets"), self.store.rstrip("/") + "/datasets"]

    def weights_roots(self) -> list[str]:
        """Weights may also be a version's model.pt: the store's models/."""
        return [*self.data_roots(), self.store.rstrip("/") + "/models"]

    @field_validator("worker_resources", "api_resources", "predict_resources", "driver_resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name.strip() or amount <= 0:
                raise ValueError("each entry is a Ray resource name and a number > 0")
        return v

    def resources_per_worker(self, use_gpu: bool) -> dict[str, float] | None:
        """Ray Train's ``resources_per_worker``: None (Ray's default, a CPU or a GPU) unless
        the operator asked for ``worker_resources``, which come beside that CPU or GPU."""
        if not self.worker_resources:
            return None
        return {("GPU" if use_gpu else "CPU"): 1.0, **self.worker_resources}

    def out_roots(self) -> list[str]:
        """Where a predict request's out_uri may point: the roots and the store's predictions/."""
        return [*self.data_roots(), self.store.rstrip("/") + "/predictions"]

    @field_validator("api_writers")
    @classmethod
    def _named_writers(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _writers(v.get_secret_value())  # a bad entry stops the service at start
        return v

    def write_tokens(self) -> list[tuple[str, SecretStr]]:
        """(identity, token) of every write token: ``api`` for ``api_token``, then the
        named ones of ``api_writers``."""
        out = [("api", self.api_token)] if self.api_token is not None else []
        if self.api_writers is not None:
            out += _writers(self.api_writers.get_secret_value())
        return out

    def streams(self, images: int, image_size: int | None = None) -> bool:
        """Whether a set of ``images`` decoded at ``image_size`` px is streamed from
        shards instead of decoded into the driver's memory: from ``stream_min_images``
        images, or when its decoded size is over ``decode_memory_mb``."""
        if images >= self.stream_min_images:
            return True
        side = image_size or 0
        return images * side * side * 3 > self.decode_memory_mb * 2**20

    def embedded_on_cluster(
        self, nodes: int, uses: tuple[str, ...] = ("store", "database", "broker")
    ) -> str | None:
        """Why these settings cannot serve a cluster of ``nodes`` nodes, as one line saying
        what to set, or None. The embedded defaults are for one node: the store and the
        SQLite file are folders under this node's home (the same string names each node's
        own disk), and the broker's default is this node's 127.0.0.1; a process on another
        node would silently use its own empty ones. A store folder the operator names is
        taken as shared (NFS and the like); a broker URL the operator gave, even one on
        127.0.0.1, is taken as meant. ``uses``: what the asking process needs."""
        if nodes <= 1:
            return None
        missing = []
        if "store" in uses and self.store_url is None:
            missing.append(f"COLECIONADOR_STORE_URL (s3://...; now the folder {self.store})")
        if "database" in uses and self.database_url is None:
            missing.append("COLECIONADOR_DATABASE_URL (postgresql://...; now this node's SQLite)")
        if "broker" in uses and "broker_url" not in self.model_fields_set:
            missing.append("COLECIONADOR_BROKER_URL (now the default amqp://...@127.0.0.1)")
        if not missing:
            return None
        return (
            f"the cluster has {nodes} nodes and these settings are one node's embedded "
            f"defaults: set {', '.join(missing)} on every node (docs/operations/cluster.md)"
        )

    def gate_floor(self) -> dict[str, float]:
        """The operator's minimum threshold per gate rule (``gate_<metric>`` names)."""
        return {
            "gate_accuracy": self.gate_min_accuracy,
            "gate_precision": self.gate_min_precision,
            "gate_recall": self.gate_min_recall,
        }

    @property
    def cache_dir(self) -> Path:
        path = self.resolved_home / "cache"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _writers(raw: str) -> list[tuple[str, SecretStr]]:
    """``ana=<token>,bob=<token>`` as (name, token); ValueError for an entry without a
    name or a token, or the name the quality gate's own moves go by."""
    out = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        name, _, token = (p.strip() for p in entry.partition("="))
        if not re.fullmatch(r"[\w.@\-]{1,200}", name) or not token:
            raise ValueError("api_writers: each entry is name=token (name: letters, digits, ._@-)")
        if name == "gate":
            raise ValueError("api_writers: 'gate' is the quality gate's own name")
        out.append((name, SecretStr(token)))
    return out


def get_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
