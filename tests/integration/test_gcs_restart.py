"""GCS fault tolerance, tried: a head whose GCS keeps its tables in Redis
(``RAY_REDIS_ADDRESS``, a namespace of the test's own), a worker node (tests/multinode.py),
and on the worker node a detached actor holding state and a Serve replica behind that
node's own proxy. The head is killed (SIGKILL to every process of it: GCS, raylet,
dashboard, the Serve controller) and started again at the same address, as KubeRay
restarts a head pod; what survives is measured, and printed (``-s``) as one
``gcs-restart:`` line (docs/operations/cluster.md, "The head restarts", quotes it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import redisstore
from tests.conftest import wait_until
from tests.multinode import GPU_NODE, WorkerNode, private_mounts_refused, state
from tests.raycluster import LocalRayCluster, free_port

pytestmark = pytest.mark.integration

DRIVER = str(Path(__file__).resolve().parents[1] / "gcs_driver.py")
# how long a worker node's raylet waits for a GCS that went away before it exits
RECONNECT_S = 60


@dataclass
class FtCluster:
    head: LocalRayCluster
    worker: WorkerNode
    namespace: str
    head_port: int  # the Serve proxy on the head
    worker_port: int  # the Serve proxy on the worker node
    orphans: list[int] = field(default_factory=list)  # processes to end at teardown


@pytest.fixture
def ft_cluster():
    for why in (redisstore.unreachable(), private_mounts_refused()):
        if why is not None:
            pytest.skip(f"no GCS restart here: {why}")
    namespace = f"colecionador-test-{uuid.uuid4().hex[:8]}"
    env = {
        "RAY_REDIS_ADDRESS": redisstore.ADDRESS,
        "RAY_external_storage_namespace": namespace,
    }
    head = LocalRayCluster(num_cpus=0, env=env, port=free_port(), dashboard_port=free_port())
    worker_port = free_port()
    try:
        worker = WorkerNode(
            head,
            num_cpus=1,
            resources={GPU_NODE: 2},
            env={
                "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(worker_port),
                "RAY_gcs_rpc_server_reconnect_timeout_s": str(RECONNECT_S),
            },
        )
    except BaseException:
        head.stop()
        redisstore.drop_namespace(namespace)
        raise
    c = FtCluster(head, worker, namespace, free_port(), worker_port)
    yield c
    worker.stop(timeout=5)
    head.stop(timeout=10)
    for pid in c.orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    redisstore.drop_namespace(namespace)
    assert redisstore.keys(namespace) == []


def driver(cluster: LocalRayCluster, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    done = subprocess.run(
        [sys.executable, DRIVER, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def http(cluster: LocalRayCluster, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        cluster.dashboard_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def answer(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=2) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


@dataclass
class Poller:
    """GET /echo on one proxy every 0.1 s in a thread: (seconds since start, answer)."""

    port: int
    seen: list[tuple[float, dict | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.seen.append((time.monotonic() - self.t0, answer(self.port)))

    def done(self) -> list[tuple[float, dict | None]]:
        self.stop.set()
        self.thread.join(10)
        return self.seen


def job_status(cluster: LocalRayCluster, sid: str) -> dict:
    return http(cluster, f"/api/jobs/{sid}")


def test_a_head_restart_keeps_the_worker_nodes_actors_and_serve_replicas(ft_cluster):
    c = ft_cluster
    head, worker = c.head, c.worker
    old_head = next(n["node_id"] for n in state(head, "nodes") if n["is_head_node"])
    before = driver(head, "setup", head.address, str(c.head_port), GPU_NODE)["counter"]
    assert before["value"] == 3 and before["node"] == worker.node_id
    first = wait_until(lambda: answer(c.worker_port), 60, "the worker node's proxy")
    assert first["node"] == worker.node_id
    assert answer(c.head_port) == {"pid": first["pid"], "node": worker.node_id}
    # Ray's job table: one job ended, one whose driver is running on the head
    done_sid, running_sid = f"done-{uuid.uuid4().hex[:6]}", f"running-{uuid.uuid4().hex[:6]}"
    http(head, "/api/jobs/", {"entrypoint": "echo done", "submission_id": done_sid})
    wait_until(lambda: job_status(head, done_sid)["status"] == "SUCCEEDED", 60, "a job's end")
    pid_file = head.temp / "entrypoint.pid"
    sleeper = (
        "python -c 'import os, signal; "  # runs until the head's kill takes it
        f'open("{pid_file}", "w").write(str(os.getpid())); signal.pause()\''
    )
    http(head, "/api/jobs/", {"entrypoint": sleeper, "submission_id": running_sid})
    wait_until(lambda: job_status(head, running_sid)["status"] == "RUNNING", 60, "a job's start")
    entrypoint = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "its pid"))
    c.orphans.append(entrypoint)
    assert redisstore.keys(c.namespace)  # the GCS's tables are in Redis

    poll = Poller(c.worker_port)
    wait_until(lambda: poll.seen, 10, "the first poll")
    t_kill = time.monotonic()
    head.kill_head()
    # Ray starts a job's entrypoint in a session of its own, out of the head's process
    # group: a lost head pod takes it with it, so here it is killed too
    os.kill(entrypoint, signal.SIGKILL)
    c.orphans.remove(entrypoint)
    up_s = head.restart()
    new_head = wait_until(
        lambda: next(
            (n["node_id"] for n in state(head, "nodes", state="ALIVE") if n["is_head_node"]),
            None,
        ),
        30,
        "the new head in its own node table",
    )

    def worker_alive() -> bool:
        return any(n["node_id"] == worker.node_id for n in state(head, "nodes", state="ALIVE"))

    wait_until(worker_alive, RECONNECT_S, "the worker node in the new GCS's table")
    rejoin_s = time.monotonic() - t_kill
    after = driver(head, "read", head.address)["counter"]
    read_s = time.monotonic() - t_kill
    wait_until(lambda: answer(c.head_port), 120, "the head's proxy, started again")
    head_proxy_s = time.monotonic() - t_kill
    seen = poll.done()

    # the worker node, its actor and its replica are the ones from before the restart
    assert new_head != old_head
    assert worker_alive()
    assert after == {"value": 4, "pid": before["pid"], "node": worker.node_id}
    failed = [t for t, a in seen if a is None]
    assert {a["pid"] for _, a in seen if a} == {first["pid"]}
    assert failed == [], f"the worker node's proxy failed at {failed}"
    assert answer(c.head_port)["pid"] == first["pid"]
    nodes = {n["node_id"]: n["state"] for n in state(head, "nodes")}
    assert nodes[old_head] == "DEAD"
    # the job table is in Redis: the ended job as it was. The running one, whose driver
    # died with the head, still reads RUNNING: the job manager that fails it (in a
    # dashboard agent) starts only with the next job request, a submission here
    assert job_status(head, done_sid)["status"] == "SUCCEEDED"
    assert job_status(head, running_sid)["status"] == "RUNNING"
    t_next = time.monotonic()
    next_sid = f"next-{uuid.uuid4().hex[:6]}"
    http(head, "/api/jobs/", {"entrypoint": "echo next", "submission_id": next_sid})
    lost = wait_until(
        lambda: (j := job_status(head, running_sid))["status"] != "RUNNING" and j,
        60,
        "the running job's end",
    )
    failed_s = time.monotonic() - t_next
    assert lost["status"] == "FAILED", lost
    wait_until(lambda: job_status(head, next_sid)["status"] == "SUCCEEDED", 60, "the next job")
    print(
        f"\ngcs-restart: head back (dashboard) {up_s:.1f} s; worker node in the new GCS "
        f"{rejoin_s:.1f} s after the kill; its detached actor answered at {read_s:.1f} s "
        f"(same pid, value 3 -> 4); its proxy answered {len(seen)} of {len(seen)} polls "
        f"over {seen[-1][0]:.1f} s; the head's proxy back at {head_proxy_s:.1f} s; "
        f"the running job RUNNING until the next submission, FAILED {failed_s:.1f} s after "
        f"it ({lost.get('message')})"
    )
