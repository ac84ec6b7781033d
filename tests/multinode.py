"""A Ray cluster of two nodes on one machine, as the users run one: a head that runs the
drivers and services but no work (0 CPUs), and a worker node (2 CPUs) in its own mount
namespace, whose home folder and the test session's temporary folders are empty tmpfs
mounts: it shares no filesystem with the head but the code and the venv. Each node reads
its own settings and secrets folder, as an operator's nodes do.

The worker node offers a custom resource (``GPU_NODE``) standing in for a GPU node type:
Ray's logical GPUs could not run CUDA here. The test process does not join the cluster
(it stays the driver of the session's one-node cluster): it talks to this one through
its job server and its state API, over HTTP with the token.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.raycluster import LocalRayCluster, free_port

RAY = str(Path(sys.executable).with_name("ray"))
GPU_NODE = "colecionador_gpu_node"  # the worker node's custom resource

# Mount tmpfs over each path given before "--", then run the command after it.
_HIDE_AND_RUN = (
    'while [ "$1" != -- ]; do mount -t tmpfs tmpfs "$1" || exit 97; shift; done; shift; exec "$@"'
)


def private_mounts_refused() -> str | None:
    """Why this machine cannot give a process its own mount namespace, or None."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = Path(tempfile.mkdtemp(prefix="mnt-probe-"))
    try:
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {probe}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        probe.rmdir()
    if done.returncode != 0:
        return f"the kernel refuses a private mount namespace: {done.stderr.strip()[:200]}"
    return None


class WorkerNode:
    """``ray start --address=<head>`` in a private mount namespace: ``hide`` (folders the
    head has) and its own home are empty there. ``env``: its settings; ``secrets``: the
    files of its COLECIONADOR_SECRETS_DIR (name -> value)."""

    def __init__(
        self,
        head: LocalRayCluster,
        *,
        num_cpus: int = 2,
        resources: dict[str, float] | None = None,
        hide: list[Path] | tuple[Path, ...] = (),
        env: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        startup_timeout: float = 120.0,
    ):
        self.temp = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))
        self.home = self.temp / "home"
        self.home.mkdir()
        secrets_dir = self.temp / "secrets"
        secrets_dir.mkdir(mode=0o700)
        for name, value in (secrets or {}).items():
            (secrets_dir / name).write_text(value)
        node_env = {k: v for k, v in os.environ.items() if not k.startswith("COLECIONADOR_")}
        node_env.pop("RAY_ADDRESS", None)
        node_env.update(
            env or {},
            HOME=str(self.home),
            COLECIONADOR_SECRETS_DIR=str(secrets_dir),
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(head.token_path),
        )
        ray_bin = str(Path(sys.executable).with_name("ray"))
        ports = {
            name: free_port()
            for name in (
                "node-manager-port",
                "object-manager-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "metrics-export-port",
                "runtime-env-agent-port",
            )
        }
        cmd = [
            "unshare",
            "-m",
            "sh",
            "-c",
            _HIDE_AND_RUN,
            "sh",
            str(self.home),
            *map(str, hide),
            "--",
            ray_bin,
            "start",
            f"--address={head.address}",
            "--block",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(resources or {})}",
            f"--temp-dir={self.temp / 'ray'}",
            "--disable-usage-stats",
            *(f"--{k}={v}" for k, v in ports.items()),
        ]
        self.head = head
        self.log_path = self.temp / "ray-start.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, env=node_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self.node_id = self._wait_joined(startup_timeout)
        except Exception:
            self.stop()
            raise

    def _wait_joined(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker node exited {self.proc.returncode}:\n{self.tail()}")
            workers = [n for n in alive_nodes(self.head) if not n["is_head_node"]]
            if workers:
                return workers[0]["node_id"]
            time.sleep(0.5)
        raise TimeoutError(f"worker node did not join in {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def state(cluster: LocalRayCluster, resource: str, **filters: str) -> list[dict[str, Any]]:
    """Ray's state API (``/api/v0/<resource>``: nodes, actors, tasks, ...) of ``cluster``,
    filtered by equality (``class_name="RayTrainWorker"``)."""
    query = "&".join(
        f"filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items()
    )
    req = urllib.request.Request(
        f"{cluster.dashboard_url}/api/v0/{resource}?limit=10000&detail=1&{query}",
        headers={"Authorization": f"Bearer {cluster.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["data"]["result"]["result"]


def job_logs(cluster: LocalRayCluster, sid: str) -> str:
    """What the Ray job ``sid``'s driver printed (the job server's logs endpoint)."""
    req = urllib.request.Request(
        f"{cluster.dashboard_url}/api/jobs/{sid}/logs",
        headers={"Authorization": f"Bearer {cluster.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read()).get("logs", ""))


def actor_logs(cluster: LocalRayCluster, class_name: str, n: int = 3000) -> str:
    """The tail of each log file of the head's worker processes that ran ``class_name``
    (Ray names an actor's process ``:actor_name:<class>`` at the top of its files)."""
    out = []
    for path in sorted((cluster.temp / "session_latest" / "logs").glob("worker-*")):
        text = path.read_bytes().decode(errors="replace")
        if f":actor_name:{class_name}" in text[:2000]:
            out.append(f"--- {path.name}\n{text[-n:]}")
    return "\n".join(out)


def alive_nodes(cluster: LocalRayCluster) -> list[dict[str, Any]]:
    try:
        return state(cluster, "nodes", state="ALIVE")
    except OSError:
        return []


def node_settings(s3_server, bucket: str, pg_url: str, **extra: str) -> dict[str, str]:
    """A job's settings as the submitter gives them (no secret: the nodes hold those)."""
    return {
        "COLECIONADOR_DATABASE_URL": pg_url,
        "COLECIONADOR_STORE_URL": f"s3://{bucket}/store",
        "COLECIONADOR_S3_ENDPOINT": s3_server.endpoint,
        "COLECIONADOR_S3_ACCESS_KEY": s3_server.access_key,
        "COLECIONADOR_S3_REGION": s3_server.region,
        "COLECIONADOR_PUBLISH_EVENTS": "false",
        **extra,
    }


def submit(
    cluster: LocalRayCluster,
    job_env: dict[str, str],
    *args: str,
    recipe: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """``ray job submit -- python -m services.jobs ARGS`` (with ``recipe`` as ``--set``
    hyperparameters) on ``cluster``: (submission id, output)."""
    sid = f"mn-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLECIONADOR_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    sets = [a for k, v in (recipe or {}).items() for a in ("--set", f"{k}={v}")]
    done = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard_url, "--submission-id", sid]
        + ["--runtime-env-json", json.dumps({"env_vars": job_env}), "--"]
        + [sys.executable, "-m", "services.jobs", *args, *sets],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return sid, done.stdout + done.stderr
