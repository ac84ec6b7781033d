"""What runs on Ray Serve, as ``up`` needs it: Serve's HTTP address and proxy location,
and per application its status, the recipe its deployment carries in ``user_config``
and its replicas.

Read from the Serve controller's instance details, the data behind ``serve status`` and
the dashboard's Serve page (``ServeInstanceDetails``). The Python way to it is the
controller client (``ray.serve.context._get_global_client``, what ``serve.run`` and
``serve.delete`` use themselves), one call, wrapped here alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.deploy.recipe import KEY, Recipe, read

# an application in these states is redeployed whatever its recipe says
BROKEN = ("DEPLOY_FAILED", "UNHEALTHY")


@dataclass(frozen=True)
class RunningApp:
    """One Serve application: its status (and Serve's message), its recipe (None: not
    deployed by ``up``), the ids of its running replicas."""

    name: str
    status: str
    recipe: Recipe | None
    replica_ids: tuple[str, ...]
    message: str = ""

    @property
    def broken(self) -> bool:
        return self.status in BROKEN


@dataclass(frozen=True)
class ServeState:
    """Serve's cluster-wide options and its applications, by name."""

    host: str | None
    port: int | None
    proxy_location: str | None
    apps: dict[str, RunningApp]

    def serve_options(self) -> dict[str, Any]:
        """In the shape of UpOptions.serve()."""
        return {"host": self.host, "port": self.port, "proxy_location": self.proxy_location}


def _text(value: Any) -> Any:
    """An enum's value (Serve's details keep some as enums), anything else as it is."""
    return getattr(value, "value", value)


def _app(name: str, raw: dict[str, Any]) -> RunningApp:
    recipe, replicas = None, []
    for deployment in (raw.get("deployments") or {}).values():
        config = deployment.get("deployment_config") or {}
        user_config = config.get("user_config")
        if recipe is None and isinstance(user_config, dict):
            recipe = read(user_config.get(KEY))
        replicas += [r["replica_id"] for r in deployment.get("replicas") or []]
    status, message = str(_text(raw.get("status"))), str(raw.get("message") or "")
    return RunningApp(name, status, recipe, tuple(sorted(replicas)), message)


def parse(details: dict[str, Any]) -> ServeState:
    """ServeInstanceDetails as a dict (the controller's answer) to a ServeState."""
    http = details.get("http_options") or {}
    apps = {n: _app(n, raw) for n, raw in (details.get("applications") or {}).items()}
    location = details.get("proxy_location")
    return ServeState(
        host=http.get("host"),
        port=http.get("port"),
        proxy_location=None if location is None else str(_text(location)),
        apps=apps,
    )


def serve_state() -> ServeState | None:
    """What runs on the connected cluster's Serve; None when Serve is not running."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    return parse(client.get_serve_details())
