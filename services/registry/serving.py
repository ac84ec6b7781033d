"""Model serving: one Ray Serve application per model (``predict-<model>``, no HTTP route
of its own), whose replicas answer with the version behind an alias (``production`` by
default) or a pinned version. The API's ``POST /models/{name}/predict`` (torch-free,
services/api/routes/predict.py) reaches it through a deployment handle.

- Requests are batched with ``@serve.batch``: up to ``max_batch_size`` requests waiting at
  most ``batch_wait_timeout_s`` go through the model in one forward pass.
- Every ``reload_s`` a thread of each replica reads the alias; when it moved, the new
  version is loaded beside the one answering and swapped in once ready, so no request is
  refused while the alias moves (a batch is answered by one version, and says which).
- Replicas and autoscaling are settable (``colecionador serve --predict-*``).
- Opt-in, ``hard_cases``: answered images under a confidence threshold (or a sampled
  share) are kept in the store with their answer, off the request path, as a bounded
  pool to label from (services/registry/hard_cases.py, docs/guide/hard-cases.md).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig

from services.config import Settings
from services.db import repo
from services.db.session import prepare_database, session_factory
from services.errors import one_line
from services.events.schemas import ALIAS_PATTERN
from services.metrics import process as metrics
from services.registry.apps import DEPLOYMENT_NAME, app_name
from services.registry.hard_case_rules import HardCases
from services.registry.hard_cases import HardCaseKeeper
from services.replica_settings import ReplicaSettings
from services.store.artifacts import MODEL_FILE, version_prefix
from services.store.storage import open_store

log = logging.getLogger("colecionador.serving")

MAX_BATCH_SIZE = 16  # requests per forward pass
BATCH_WAIT_TIMEOUT_S = 0.005
RELOAD_S = 2.0  # how often a replica reads the alias
MAX_ONGOING_REQUESTS = 32  # at least max_batch_size: a replica must hold a whole batch


@dataclass(frozen=True)
class Loaded:
    version: int
    predictor: Any  # training.predict.Predictor
    loaded_at: float


def load_version(settings: Settings, model_name: str, version: int) -> Loaded:
    """model.pt of ``model_name`` v``version`` from the store, ready to predict."""
    import torch

    from training.predict import Predictor

    raw = open_store(settings).get_bytes(version_prefix(model_name, version) + MODEL_FILE)
    package = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return Loaded(version, Predictor.from_package(package), time.time())


class ModelServer:
    """A replica serving one model: the version behind ``alias`` (or ``version``)."""

    def __init__(
        self,
        sent: ReplicaSettings,
        model_name: str,
        alias: str = "production",
        version: int | None = None,
        reload_s: float = RELOAD_S,
        max_batch_size: int = MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = BATCH_WAIT_TIMEOUT_S,
        torch_threads: int = 1,
        hard_cases: HardCases | None = None,
    ):
        import torch

        torch.set_num_threads(torch_threads)
        settings = sent.resolve()  # its secrets read on this node
        self.settings, self.model_name, self.alias, self.pinned = (
            settings,
            model_name,
            alias,
            version,
        )
        self.reload_s = reload_s
        self._current: Loaded | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        # serve.batch adds these setters; its annotations keep the bare coroutine's type
        self._batched.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        prepare_database(settings)
        self._sessions = session_factory(settings.db_url)
        self._keeper = (
            HardCaseKeeper(settings, model_name, hard_cases)
            if hard_cases is not None and hard_cases.enabled
            else None
        )
        self.refresh()  # the first version before the replica reports ready
        self._watcher = threading.Thread(target=self._watch, name="alias-watch", daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------------ the version
    def target(self) -> int | None:
        if self.pinned is not None:
            return self.pinned
        with self._sessions() as s:
            return repo.version_for_alias(s, self.model_name, self.alias)

    def refresh(self) -> int | None:
        """Load the target version if it is not the one answering; the old one answers
        until the new one is ready. Returns the version answering now."""
        try:
            want = self.target()
            if want is not None and (self._current is None or self._current.version != want):
                self._current = load_version(self.settings, self.model_name, want)
                log.info("%s: now answering with v%s", self.model_name, want)
            self._error = None
        except Exception as e:  # noqa: BLE001 - keep answering with what is loaded
            self._error = one_line(e)
            log.warning("%s: cannot load the version behind %s: %s", self.model_name, self.alias, e)
        return None if self._current is None else self._current.version

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_s):
            self.refresh()

    def __del__(self) -> None:
        self._stop.set()
        keeper = getattr(self, "_keeper", None)  # None too when __init__ failed early
        if keeper is not None:
            keeper.close()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve hands over the deployment's ``user_config`` (``colecionador up``'s
        recipe): kept, nothing else."""
        self.user_config = config

    def status(self) -> dict[str, Any]:
        c = self._current
        return {
            "model_name": self.model_name,
            "alias": None if self.pinned is not None else self.alias,
            "pinned": self.pinned,
            "version": None if c is None else c.version,
            "loaded_at": None if c is None else c.loaded_at,
            "error": self._error,
            "hard_cases": None if self._keeper is None else self._keeper.status(),
        }

    def hard_cases(self, flush_s: float = 0.0) -> dict[str, Any] | None:
        """This replica's hard-case counts (None: not kept), once what it was offered is
        written or dropped when ``flush_s`` > 0 (``flushed`` False: still pending)."""
        if self._keeper is None:
            return None
        flushed = self._keeper.flush(flush_s) if flush_s > 0 else None
        return {**self._keeper.status(), "flushed": flushed}

    # ------------------------------------------------------------------ predict
    async def predict(self, images: list[bytes], k: int = 5) -> dict[str, Any]:
        """Top-k labels for each image, and the version that answered; or
        ``{"status": 4xx/503, "error": ...}`` (an unreadable image names its index).
        Each call is counted, and its latency observed, with Ray's metrics API."""
        t0 = time.perf_counter()
        try:
            answer = await self._batched((images, k))
        except BaseException:
            metrics.predict_answered(self.model_name, None, 500, 0, time.perf_counter() - t0)
            raise
        metrics.predict_answered(
            self.model_name,
            answer.get("version"),
            int(answer.get("status", 200)),
            len(images),
            time.perf_counter() - t0,
        )
        return answer

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def _batched(self, calls: list[tuple[list[bytes], int]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.answer, calls)

    def answer(self, calls: list[tuple[list[bytes], int]]) -> list[dict[str, Any]]:
        """One batch: every call's images decoded, one forward pass, split back."""
        import numpy as np

        from training.predict import BadImage, decode_image, top_k

        loaded = self._current  # one version answers the whole batch
        if loaded is None:
            why = self._error or f"no version of {self.model_name} behind {self.alias!r} yet"
            return [{"status": 503, "error": why}] * len(calls)
        p = loaded.predictor
        arrays: list[list[Any]] = []
        answers: list[dict[str, Any] | None] = []
        for images, _k in calls:
            try:
                decoded = []
                for i, raw in enumerate(images):
                    try:
                        decoded.append(decode_image(raw, p.image_size))
                    except BadImage as e:
                        raise BadImage(f"images[{i}]: {e}") from None
                arrays.append(decoded)
                answers.append(None)
            except BadImage as e:
                arrays.append([])
                answers.append({"status": 422, "error": str(e)})
        flat = [a for group in arrays for a in group]
        probs = p.probs(np.stack(flat)) if flat else np.zeros((0, len(p.classes)))
        out, start = [], 0
        for (images, k), group, answer in zip(calls, arrays, answers):
            if answer is not None:
                out.append(answer)
                continue
            rows = probs[start : start + len(group)]
            start += len(group)
            alias = None if self.pinned is not None else self.alias
            predictions = top_k(rows, p.classes, k)
            if self._keeper is not None:  # a put on a queue per image kept, no I/O
                confidences = [float(c) for c in rows.max(axis=1)]
                self._keeper.consider(images, confidences, predictions, loaded.version, alias)
            out.append(
                {
                    "model_name": self.model_name,
                    "alias": alias,
                    "version": loaded.version,
                    "predictions": predictions,
                }
            )
        return out


def predict_application(
    settings: Settings,
    model_name: str,
    *,
    alias: str = "production",
    version: int | None = None,
    num_replicas: int = 1,
    autoscaling_config: AutoscalingConfig | dict[str, Any] | None = None,
    num_cpus: float = 0.0,
    max_batch_size: int = MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = BATCH_WAIT_TIMEOUT_S,
    reload_s: float = RELOAD_S,
    torch_threads: int = 1,
    user_config: dict[str, Any] | None = None,
    hard_cases: HardCases | None = None,
    sent: ReplicaSettings | None = None,
) -> Any:
    """The bound Serve application of one model, for
    ``serve.run(app, name=app_name(model_name), route_prefix=None)``. ``user_config``:
    data Serve keeps with the deployment (``colecionador up``'s recipe); ``hard_cases``:
    what its replicas keep of their answers (None: nothing); ``sent``: what its replicas
    are sent, ``ReplicaSettings.of(settings)`` (computed here when not given)."""
    scale: dict[str, Any] = (
        {"autoscaling_config": autoscaling_config}
        if autoscaling_config is not None
        else {"num_replicas": num_replicas}
    )
    if settings.predict_max_replicas_per_node is not None:
        scale["max_replicas_per_node"] = settings.predict_max_replicas_per_node
    deployment = serve.deployment(
        ModelServer,
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_cpus": num_cpus, "resources": dict(settings.predict_resources)},
        max_ongoing_requests=max(MAX_ONGOING_REQUESTS, max_batch_size),
        user_config=user_config,
        **scale,
    )
    return deployment.bind(  # type: ignore[attr-defined]  # a Deployment: Ray's overloads miss (cls, **options)
        # never the secrets: Serve keeps init args in the GCS
        sent if sent is not None else ReplicaSettings.of(settings),
        model_name,
        alias,
        version,
        reload_s,
        max_batch_size,
        batch_wait_timeout_s,
        torch_threads,
        hard_cases,
    )


class PredictArgs(BaseModel):
    """A predict application's ``args`` in a Serve config (a RayService's
    serveConfigV2); its name there must be ``predict-<model_name>`` (apps.app_name).
    Replicas, autoscaling and CPUs go in the config's ``deployments`` entry (name
    ``ModelServer``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(pattern=r"^[\w.\-]+$", max_length=200)  # as a job request's
    alias: str = Field("production", pattern=ALIAS_PATTERN)
    version: int | None = Field(None, ge=1)  # pins a version; the alias is then ignored
    max_batch_size: int = Field(MAX_BATCH_SIZE, ge=1)
    batch_wait_ms: float = Field(BATCH_WAIT_TIMEOUT_S * 1000, ge=0)
    reload_s: float = Field(RELOAD_S, gt=0)
    torch_threads: int = Field(1, ge=1)
    hard_cases: HardCases | None = None  # e.g. {below: 0.6, sample: 0.01}: keep hard cases

    @field_validator("model_name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        if v.strip(".") == "":  # ".", "..": not a model's folder in the store
            raise ValueError("model_name must be a plain folder name, not '.' or '..'")
        return v


def build_predict(args: dict[str, Any]) -> Application:
    """One model's predict application for a Serve config's ``import_path``
    (``services.registry.serving:build_predict``), with the settings of the process that
    builds it (a pod of the cluster: its environment and secrets folder)."""
    a = PredictArgs.model_validate(args)
    app: Application = predict_application(
        Settings(),
        a.model_name,
        alias=a.alias,
        version=a.version,
        max_batch_size=a.max_batch_size,
        batch_wait_timeout_s=a.batch_wait_ms / 1000,
        reload_s=a.reload_s,
        torch_threads=a.torch_threads,
        hard_cases=a.hard_cases,
    )
    return app


def deploy_model(settings: Settings, model_name: str, **kw: Any) -> str:
    """Deploy (or update) the model's application; returns its name."""
    name = app_name(model_name)
    serve.run(predict_application(settings, model_name, **kw), name=name, route_prefix=None)
    return name
