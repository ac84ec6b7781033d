"""The drivers of tests/integration/test_gcs_restart.py, each a short-lived process of its
own (the test process stays the driver of the session's cluster): run as a script, so
the actor and the deployment below travel to the worker node by value.

    python tests/gcs_driver.py setup ADDRESS HTTP_PORT RESOURCE  # counter at 3, Serve app
    python tests/gcs_driver.py read ADDRESS                      # the counter, once more

Each prints one JSON line last. Ray's token comes from the environment
(RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH), as for any driver.
"""

from __future__ import annotations

import json
import os
import sys

import ray

NAMESPACE = "gcs-restart"
COUNTER = "gcs-counter"
APP, ROUTE = "echo", "/echo"


@ray.remote(num_cpus=0, max_restarts=0)
class Counter:
    """State that lives only in its process: a restarted actor would start from 0 (and
    with max_restarts=0 it is never restarted, only lost)."""

    def __init__(self) -> None:
        self.value = 0

    def incr(self) -> dict[str, object]:
        self.value += 1
        return {
            "value": self.value,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }


def setup(address: str, port: int, resource: str) -> dict[str, object]:
    from ray import serve

    ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING")
    counter = Counter.options(name=COUNTER, lifetime="detached", resources={resource: 1}).remote()  # type: ignore[attr-defined]
    for _ in range(3):
        seen = ray.get(counter.incr.remote())

    @serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {resource: 0.5}})
    class Echo:
        def __call__(self, request: object) -> dict[str, object]:
            return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    # a proxy on every node: the worker node's listens on RAY_SERVE_WORKER_PROXY_HTTP_PORT
    serve.start(proxy_location="EveryNode", http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), name=APP, route_prefix=ROUTE)
    return {"counter": seen}


def read(address: str) -> dict[str, object]:
    ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING")
    counter = ray.get_actor(COUNTER)
    return {"counter": ray.get(counter.incr.remote())}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "setup":
        out = setup(args[0], int(args[1]), args[2])
    else:
        out = read(args[0])
    print(json.dumps(out), flush=True)
