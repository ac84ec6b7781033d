"""The ingress as a detached, named Ray actor on the head (or where the operator's resources
say): started, found, stopped; restarted by Ray when it dies."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from services.config import HEAD_NODE, Settings
from services.errors import one_line
from services.ingress.consumer import Consumer, log
from services.jobs.ray_jobs import NAMESPACE, refuse_embedded, settings_env

ACTOR_NAME = "colecionador-ingress"


def _make_actor_class() -> Any:  # a Ray actor class
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class Ingress:
        """Runs a Consumer on its own thread and event loop. If that loop ever ends on its
        own (a bug), the process exits so that Ray restarts the actor: never a live actor
        that consumes nothing."""

        def __init__(self, env: dict[str, str], prefetch: int = 4, deployed_as: Any = None) -> None:
            os.environ.update(env)
            self.consumer = Consumer(Settings(), prefetch=prefetch)
            self._deployed_as = deployed_as  # `colecionador up`'s recipe (services/deploy)
            self.stopping = False
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

        def _run(self) -> None:
            try:
                asyncio.run(self.consumer.run())
            except BaseException as e:  # noqa: BLE001 - reported, then restarted
                log.exception("the ingress loop died: %s", e)
            if not self.stopping:
                os._exit(1)

        def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
            self.consumer.ready.wait(timeout)
            return self.status()

        def status(self) -> dict[str, Any]:
            return {"running": self.thread.is_alive(), **self.consumer.stats}

        def deployed_as(self) -> Any:
            """What it was started with, as ``colecionador up`` recorded it (or None)."""
            return self._deployed_as

        def stop(self) -> dict[str, Any]:
            self.stopping = True
            self.consumer.stop()
            self.thread.join(30)
            return self.status()

    return Ingress


def start_ingress(
    settings: Settings, prefetch: int = 4, wait_s: float = 60.0, deployed_as: Any = None
) -> Any:
    """Create (or find) the detached, named ingress actor and wait (up to ``wait_s``) until
    it consumes. If the broker or the database is not reachable yet, it keeps retrying:
    its status says why it does not consume. EmbeddedOnCluster, before anything starts,
    when the cluster has several nodes and the settings are one node's embedded database
    or broker. ``deployed_as`` is kept for whoever asks (``colecionador up`` stores its
    recipe there)."""
    import ray

    refuse_embedded(settings, ("database", "broker"))

    actor = (
        _make_actor_class()
        .options(
            name=ACTOR_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            # on the head, whose node holds the settings and secrets (as Ray Train pins its
            # state actor): placed or restarted on a worker node it would open that node's
            # empty SQLite and a guest broker on its 127.0.0.1, consuming nothing
            resources={HEAD_NODE: 0.001},
        )
        .remote(settings_env(settings), prefetch, deployed_as)
    )
    ray.get(actor.wait_ready.remote(wait_s))
    return actor


def get_ingress() -> Any:
    import ray

    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)


def stop_ingress(wait_s: float = 45.0) -> dict[str, Any]:
    """Stop the ingress cleanly (its loops end, the messages it held go back to the
    queue), kill the actor, and wait (up to ``wait_s``) until its name is free, so that
    a ``start_ingress`` right after creates a new one rather than finding the old one.
    An actor that does not answer (restarting, hung) is killed all the same; its status
    then says why. ValueError when there is none."""
    import ray

    actor = get_ingress()
    status: dict[str, Any]
    try:
        status = ray.get(actor.stop.remote(), timeout=wait_s)
    except Exception as e:  # noqa: BLE001 - dead or hung: killed below all the same
        status = {"running": False, "stop_error": f"{type(e).__name__}: {one_line(e)}"}
    ray.kill(actor)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            get_ingress()
        except ValueError:  # the name is free
            break
        time.sleep(0.1)
    return status
