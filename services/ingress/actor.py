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
from services.replica_settings import ReplicaSettings, SecretNotOnNode, refusal

ACTOR_NAME = "colecionador-ingress"


class Ingress:
    """Runs a Consumer on its own thread and event loop. If that loop ever ends on its own
    (a bug), the process exits so that Ray restarts the actor: never a live actor that
    consumes nothing. It is sent its settings without their secrets
    (services/replica_settings.py: Ray keeps an actor's creation arguments in the GCS) and
    reads those on its node: a node without one of them, or with another one, fails its
    start (SecretNotOnNode naming the setting), as a Serve replica's."""

    def __init__(self, sent: ReplicaSettings, prefetch: int = 4, deployed_as: Any = None) -> None:
        settings = sent.resolve()  # its secrets read on this node, checked
        os.environ.update(settings_env(settings))  # for what reads Settings() in here
        self.consumer = Consumer(settings, prefetch=prefetch)
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


def _make_actor_class() -> Any:  # a Ray actor class
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1)(Ingress)


def start_ingress(
    settings: Settings,
    prefetch: int = 4,
    wait_s: float = 60.0,
    deployed_as: Any = None,
    sent: ReplicaSettings | None = None,
) -> Any:
    """Create (or find) the detached, named ingress actor and wait (up to ``wait_s``) until
    it consumes. If the broker or the database is not reachable yet, it keeps retrying:
    its status says why it does not consume. EmbeddedOnCluster, before anything starts,
    when the cluster has several nodes and the settings are one node's embedded database
    or broker. ``deployed_as`` is kept for whoever asks (``colecionador up`` stores its
    recipe there). ``sent``: ``ReplicaSettings.of(settings)``, when the caller has it
    already (its fingerprints cost ~50 ms a secret). SecretNotOnNode, naming what to set,
    when the actor's node lacks one of the secrets or has another one: the actor is then
    dead (Ray does not restart an actor whose ``__init__`` raised) and its name free."""
    import ray

    refuse_embedded(settings, ("database", "broker"))

    actor = (
        _make_actor_class()
        .options(
            name=ACTOR_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            # on the head, as Ray Train pins its state actor: the node whose secrets
            # the operator keeps with the settings (checked on start all the same)
            resources={HEAD_NODE: 0.001},
        )
        .remote(sent if sent is not None else ReplicaSettings.of(settings), prefetch, deployed_as)
    )
    try:
        ray.get(actor.wait_ready.remote(wait_s))
    except ray.exceptions.RayActorError as e:
        refused = refusal(e)
        if refused is None:
            raise
        raise SecretNotOnNode(refused) from e
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
