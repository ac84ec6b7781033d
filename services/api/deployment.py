"""The app as a Ray Serve deployment: ``@serve.deployment @serve.ingress(app)``, with
backpressure and the scale-out settings of ``colecionador serve``.

Backpressure (issue #18): each replica takes at most ``max_ongoing_requests`` at a time
and holds at most ``max_queued_requests`` more waiting for a slot (with Ray's HAProxy
ingress, services/api/haproxy.py, requests reach the replica's own HTTP server and it
counts them; with Serve's Python proxy each proxy holds its own queue); the rest are
rejected at once. Without the bound the queue grows without limit under overload, and
every request waits behind it (50-97 s measured at 100 req/s).

What a rejected request gets is Serve's, not the app's: Serve answers before the request
reaches FastAPI, so no middleware or exception handler of the app sees it. In Ray 2.60 it
is status 503 (``BackpressureConfig.status_code``), a ``text/plain`` body ``Request
dropped due to backpressure`` (not the JSON ``{"detail": ...}`` of the app's own errors),
and ``Retry-After: <s>`` when ``BackpressureConfig.retry_after_s`` is set, as it is here
(``retry_after_s``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig, BackpressureConfig

from services.api import CANCEL_WAIT_S, create_app
from services.config import Settings
from services.replica_settings import ReplicaSettings

DEPLOYMENT_NAME = "colecionador-api"

# A replica's share of work at once: enough to overlap database round trips, few enough
# that a request admitted to a replica is answered in well under a second on 2 cores.
MAX_ONGOING_REQUESTS = 8
# Waiting requests per replica (per proxy with Serve's proxy): a few dozen milliseconds of
# one replica's capacity (~400 req/s here behind HAProxy); anything beyond that is shed
# with 503 + Retry-After, not queued.
MAX_QUEUED_REQUESTS = 16
RETRY_AFTER_S = 1.0


def autoscaling(
    min_replicas: int,
    max_replicas: int,
    *,
    target_ongoing_requests: float | None = None,
    **extra: Any,
) -> AutoscalingConfig:
    """Serve's autoscaler between ``min_replicas`` and ``max_replicas``, aiming at
    ``target_ongoing_requests`` per replica (default: half of MAX_ONGOING_REQUESTS)."""
    target = (
        MAX_ONGOING_REQUESTS / 2 if target_ongoing_requests is None else target_ongoing_requests
    )
    return AutoscalingConfig(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target,
        **extra,
    )


def api_deployment(
    settings: Settings,
    *,
    num_cpus: float = 0.0,
    num_replicas: int = 1,
    autoscaling_config: AutoscalingConfig | dict[str, Any] | None = None,
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS,
    max_queued_requests: int = MAX_QUEUED_REQUESTS,
    retry_after_s: float | None = RETRY_AFTER_S,
    cancel_wait_s: float = CANCEL_WAIT_S,
    user_config: dict[str, Any] | None = None,
) -> Any:
    """``num_cpus`` defaults to 0: the API waits on I/O, and on a small cluster a reserved
    CPU would keep a training worker from starting. With ``autoscaling_config`` the
    replica count follows the load and ``num_replicas`` is ignored.
    ``max_queued_requests=-1`` turns shedding off (Serve's default: an unbounded queue).
    ``user_config`` is data Serve keeps with the deployment and shows in its status
    (``colecionador up`` stores its recipe there); the replicas only note it. Bind it
    to ``ReplicaSettings.of(settings)``: the replica builds the app on its node."""
    scale: dict[str, Any] = (
        {"autoscaling_config": autoscaling_config}
        if autoscaling_config is not None
        else {"num_replicas": num_replicas}
    )

    @serve.deployment(
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_cpus": num_cpus, "resources": dict(settings.api_resources)},
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=retry_after_s),
        user_config=user_config,
        **scale,
    )
    @serve.ingress()
    class ColecionadorApi:
        """colecionador's HTTP API (services.api.create_app), built on the replica from
        settings whose secrets it reads on its node (services/replica_settings.py)."""

        def __init__(self, sent: ReplicaSettings):
            self.settings = sent.resolve()

        def __serve_build_asgi_app__(self) -> Any:
            return create_app(
                self.settings, cancel_wait_s=cancel_wait_s, db_threads=max_ongoing_requests
            )

        def reconfigure(self, config: dict[str, Any]) -> None:
            """Serve hands over the deployment's ``user_config``: kept, nothing else."""
            self.user_config = config

    return ColecionadorApi


class ApiArgs(BaseModel):
    """The API application's ``args`` in a Serve config (a RayService's serveConfigV2).
    Replicas, autoscaling, CPUs and queue bounds go in the config's ``deployments``
    entry (name ``colecionador-api``), which Serve applies over the decorator's."""

    model_config = ConfigDict(extra="forbid")

    cancel_wait_s: float = Field(CANCEL_WAIT_S, gt=0)


def build_api(args: dict[str, Any]) -> Application:
    """The API application for a Serve config's ``import_path``
    (``services.api.deployment:build_api``): its settings are the environment and the
    secrets folder of the process that builds it, a pod of the cluster, never the config."""
    parsed = ApiArgs.model_validate(args)
    settings = Settings()
    app: Application = api_deployment(settings, cancel_wait_s=parsed.cancel_wait_s).bind(
        ReplicaSettings.of(settings)
    )
    return app
