"""The Redis that backs a fault-tolerant GCS in the tests (127.0.0.1:6379, or
COLECIONADOR_TEST_REDIS_ADDRESS): a few RESP commands over a socket, no client library.

Ray's GCS keeps its tables in Redis hashes named ``RAY<namespace>@<table>`` (the
namespace is ``RAY_external_storage_namespace``); ``drop_namespace`` deletes them with
Ray's own clean-up (what KubeRay's clean-up job runs when a RayCluster is deleted).
"""

from __future__ import annotations

import os
import socket

ADDRESS = os.environ.get("COLECIONADOR_TEST_REDIS_ADDRESS", "127.0.0.1:6379")


def _host_port() -> tuple[str, int]:
    host, _, port = ADDRESS.rpartition(":")
    return host, int(port)


def _command(sock_file, *args: str):
    sock_file.write(
        f"*{len(args)}\r\n".encode()
        + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    )
    sock_file.flush()
    return _reply(sock_file)


def _reply(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b":"):
        return int(rest) if kind == b":" else rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        return [_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"redis: unexpected reply {line!r}")


def call(*args: str):
    with socket.create_connection(_host_port(), timeout=5) as s, s.makefile("rwb") as f:
        return _command(f, *args)


def unreachable() -> str | None:
    """Why the tests cannot use Redis here, or None."""
    try:
        return None if call("PING") == "PONG" else f"Redis at {ADDRESS} did not answer PONG"
    except OSError as e:
        return f"no Redis at {ADDRESS}: {e}"


def keys(namespace: str) -> list[str]:
    """The keys of GCS storage namespace ``namespace``."""
    found, cursor = [], "0"
    while True:
        cursor, batch = call("SCAN", cursor, "MATCH", f"RAY{namespace}@*", "COUNT", "1000")
        found += batch
        if cursor == "0":
            return sorted(set(found))


def drop_namespace(namespace: str) -> None:
    from ray._private.gcs_utils import cleanup_redis_storage

    host, port = _host_port()
    cleanup_redis_storage(host, port, "", False, namespace)
