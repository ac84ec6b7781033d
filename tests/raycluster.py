"""A local Ray cluster for a test session, as a user runs one: ``ray start --head`` with
token authentication and a dashboard (the job server), on free ports, in its own temp dir.

``stop()`` ends only this cluster (``ray stop`` would kill every Ray process on the
machine): ``ray start --block`` shuts its cluster down when it gets SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port(low: int = 20000, high: int = 60000) -> int:
    """A free TCP port outside Ray's worker port range (10002-19999)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if low <= port < high:
            return port
    raise RuntimeError("no free port found")


def _descendants(root: int) -> set[int]:
    """The ids of every living process under ``root`` (read from /proc), and root's."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or one that just ended
        children.setdefault(ppid, []).append(int(d.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class LocalRayCluster:
    def __init__(
        self,
        num_cpus: int = 2,
        startup_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
        dashboard_port: int | None = None,
    ):
        self.temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: socket paths
        self.token = secrets.token_hex(32)
        self.token_path = self.temp / "auth_token"
        self.token_path.write_text(self.token)
        self.token_path.chmod(0o600)
        # fixed ports (``port=``, ``dashboard_port=``) let a restarted head come back at
        # the same address, where the worker nodes reconnect
        self.gcs_port, self.dashboard_port = port or free_port(), dashboard_port or free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {
            **os.environ,
            **(env or {}),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.num_cpus, self.extra_args = num_cpus, list(extra_args or [])
        self.log_path = self.temp / "ray-start.log"
        self.log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self._launch(startup_timeout)
        self.startup_s = time.monotonic() - t0

    def _launch(self, startup_timeout: float) -> None:
        """``ray start --head --block`` as this cluster's head; back once its dashboard
        answers (stopped, and the error raised, when it does not)."""
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--port={self.gcs_port}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.temp}",
            "--disable-usage-stats",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_ready(startup_timeout)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        req = urllib.request.Request(
            f"{self.dashboard_url}/api/version", headers={"Authorization": f"Bearer {self.token}"}
        )
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Ray dashboard not up after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def kill(self) -> None:
        """The whole cluster lost at once (a head machine gone): every process of it
        killed with SIGKILL, nothing shut down cleanly; then its folder removed."""
        self._kill_tree()
        self._discard()

    def _kill_tree(self) -> None:
        """SIGKILL to every process of this cluster: every descendant of ``ray start``,
        wherever its session (a Ray job's driver runs in a session of its own,
        job_supervisor.py, and one left alive would outlive its cluster as no driver on a
        lost machine does). The tree is stopped (SIGSTOP) until no new process appears,
        then killed, so none forks away."""
        tree: set[int] = set()
        while True:
            grown = _descendants(self.proc.pid) - tree
            if not grown:
                break
            for pid in grown:
                _signal(pid, signal.SIGSTOP)
            tree |= grown
        _signal(self.proc.pid, signal.SIGKILL)
        for pid in tree:
            _signal(pid, signal.SIGKILL)
        try:  # anything of this cluster still in its process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def _discard(self) -> None:
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)

    def kill_head(self) -> None:
        """The head node lost (its pod or machine gone): the GCS, the raylet, the
        dashboard and every worker process of the head killed with SIGKILL. Unlike
        ``kill()`` the folder stays, for ``restart()``; worker nodes are not touched."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def restart(self, startup_timeout: float = 120.0) -> float:
        """The head started again, as KubeRay restarts a head pod: the same ports, token,
        environment and folder (a new Ray session, a new node id). Seconds until its
        dashboard answered."""
        # A new head pod starts with an empty /tmp/ray. Here the folder keeps the old
        # head's record of its address, and the worker nodes' processes carry that
        # address on their command lines: together `ray start` reads them as a head
        # still running at it, and refuses.
        (self.temp / "ray_current_cluster").unlink(missing_ok=True)
        t0 = time.monotonic()
        self._launch(startup_timeout)
        return time.monotonic() - t0

    def stop(self, timeout: float = 5.0) -> None:
        """This cluster ended: SIGTERM to ``ray start --block``, which shuts its processes
        down; whatever still runs after ``timeout`` s is killed, the whole tree. Ray's own
        shutdown waits up to 30 s for a process that ignores SIGTERM (measured: 32 s for
        the session's cluster after one job, 4 s for an idle one), and a test cluster holds
        nothing that needs the wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_tree()
        self._discard()
