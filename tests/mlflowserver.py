"""A real MLflow tracking server for the tests: ``mlflow server`` (the ``mlflow`` package of
the dev extra) with a SQLite backend store, artifacts proxied by the server into a temp
folder (``--artifacts-destination``: clients upload over HTTP, as they do to a remote
server), on a free port.

    with MlflowServer(tmp) as server:
        MlflowClient(server.uri)

Start-up waits for ``/health`` with a deadline (no fixed sleeps; 10-30 s on 2 busy cores:
MLflow migrates its new database first). Stopped with SIGTERM to the process group it
started in, SIGKILL after ``grace`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.raycluster import free_port
from tests.s3server import _die_with_parent, _tail


class MlflowStartError(RuntimeError):
    """The server did not come up; the message ends with the tail of its log."""


def mlflow_binary() -> str:
    found = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if not found:
        raise MlflowStartError("no `mlflow` executable: pip install 'colecionador[dev]'")
    return found


class MlflowServer:
    def __init__(self, root: Path, *, start_timeout: float = 180.0, grace: float = 5.0):
        self.root, self.start_timeout, self.grace = Path(root), start_timeout, grace
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "mlflow-server.log"

    def client(self):  # noqa: ANN201 - MlflowClient, imported here
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> MlflowServer:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [
            mlflow_binary(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise MlflowStartError(
                    f"mlflow server exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise MlflowStartError(
                    f"mlflow server not ready after {self.start_timeout:.0f} s:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what it started
        try:
            proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


if __name__ == "__main__":  # python -m tests.mlflowserver: start, time, stop
    import tempfile

    with MlflowServer(Path(tempfile.mkdtemp(prefix="mlflow-test-"))) as server:
        print(f"MLflow at {server.uri} ready in {server.startup_s:.1f} s")
