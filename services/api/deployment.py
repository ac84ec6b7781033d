"""The app as a Ray Serve deployment: ``@serve.deployment @serve.ingress(app)``."""

from __future__ import annotations

from typing import Any

from ray import serve

from services.api import CANCEL_WAIT_S, create_app
from services.config import Settings

DEPLOYMENT_NAME = "colecionador-api"


def api_deployment(settings: Settings, *, num_cpus: float = 0.0, num_replicas: int = 1,
                   cancel_wait_s: float = CANCEL_WAIT_S) -> Any:
    """``num_cpus`` defaults to 0: the API waits on I/O, and on a small cluster a reserved
    CPU would keep a training worker from starting."""
    app = create_app(settings, cancel_wait_s=cancel_wait_s)

    @serve.deployment(name=DEPLOYMENT_NAME, num_replicas=num_replicas,
                      ray_actor_options={"num_cpus": num_cpus})
    @serve.ingress(app)
    class ColecionadorApi:
        """colecionador's HTTP API (services.api.create_app)."""

    return ColecionadorApi
