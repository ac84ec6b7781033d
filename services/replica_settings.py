"""The settings of a process Ray starts on some node of the cluster (a Serve replica, the
ingress actor), sent without their secrets.

A Serve replica's init arguments are pickled and kept: Serve's controller checkpoints them
in the GCS (Redis, with fault tolerance), an actor's are in its creation task. So what
travels is what ``settings_env`` lets travel to a job driver (everything but tokens, keys
and URLs that carry credentials); each secret is read on the node the process starts on
(its environment or COLECIONADOR_SECRETS_DIR, as every process of the cluster reads
them) and checked against a salted scrypt fingerprint of the sender's: a node with no
such secret, or another one, fails the process at start naming the setting, where it
would otherwise answer from another database or with other tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from services.config import Settings

# settings that are URLs: they travel when they carry no credentials (a trust-auth database)
URL_SETTINGS = ("database_url", "broker_url", "mlflow_tracking_uri")

# the settings typed as secrets (tokens, keys, URLs that may hold a password)
SECRET_FIELDS = tuple(
    n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
)

_N, _R, _P = 2**14, 8, 1  # scrypt's cost: ~50 ms and 16 MiB a fingerprint


def carries_credentials(value: str) -> bool:
    """A URL that may carry a secret in any part: a password in its user info
    (postgresql://u:p@h/db, amqp://u:p@h/), or any query or fragment at all
    (``?password=...``, ``?sslkey=...``, ``#token``): only a plainly credential-free URL
    may travel."""
    if "://" not in value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # not a URL urllib can read: keep it home
        return True
    return ":" in parts.netloc.rpartition("@")[0] or "?" in value or "#" in value


def stays_on_node(name: str, value: Any) -> bool:
    """Whether setting ``name`` with this value must never leave the node: a token or key,
    or a URL setting that carries credentials."""
    if isinstance(value, SecretStr):
        return name not in URL_SETTINGS or carries_credentials(value.get_secret_value())
    return isinstance(value, str) and carries_credentials(value)


class SecretNotOnNode(RuntimeError):
    """The node a process started on lacks a secret the sender had, or has another one."""


def refusal(error: BaseException) -> str | None:
    """The SecretNotOnNode line a Ray actor's start failed with (Ray hands an error raised
    in an actor's ``__init__`` back as the text of its traceback, whose last line is
    ``<module>.SecretNotOnNode: <what to set>``), or None when it failed otherwise."""
    if isinstance(error, SecretNotOnNode):
        return str(error)
    mark = f"{SecretNotOnNode.__module__}.{SecretNotOnNode.__name__}: "
    text = str(error)
    if not getattr(error, "actor_init_failed", False) or mark not in text:
        return None
    return text.rpartition(mark)[2].splitlines()[0].strip() or None


def fingerprint(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def same_secret(secret: str, print_: str) -> bool:
    _, salt, _digest = print_.split("$")
    return hmac.compare_digest(fingerprint(secret, bytes.fromhex(salt)), print_)


@dataclass(frozen=True)
class ReplicaSettings:
    """``values``: the settings that travel, as the sender had them; ``fingerprints``: each
    secret's fingerprint (None where the sender had none); ``fields_set``: what the sender
    set (Settings reads some defaults as "not told", e.g. the broker's)."""

    values: dict[str, Any]
    fingerprints: dict[str, str | None]
    fields_set: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> ReplicaSettings:
        values: dict[str, Any] = {}
        prints: dict[str, str | None] = {}
        for name in Settings.model_fields:
            value = getattr(settings, name)
            if stays_on_node(name, value):
                raw = value.get_secret_value() if isinstance(value, SecretStr) else value
                prints[name] = fingerprint(raw)
            elif value is None and name in SECRET_FIELDS:
                prints[name] = None
            else:
                values[name] = value
        return cls(values, prints, frozenset(settings.model_fields_set))

    def resolve(self, node: Settings | None = None) -> Settings:
        """The sender's settings, their secrets read on this node (``node``: its Settings,
        read from its environment and secrets folder when not given). SecretNotOnNode
        naming what to set when a secret is missing here or is not the sender's."""
        node = node if node is not None else Settings()
        secrets: dict[str, Any] = {}
        for name, print_ in self.fingerprints.items():
            have = getattr(node, name)
            if print_ is None:
                secrets[name] = None
                continue
            raw = have.get_secret_value() if isinstance(have, SecretStr) else have
            if raw is None or not same_secret(str(raw), print_):
                raise SecretNotOnNode(_what_to_set(name, missing=raw is None))
            secrets[name] = have
        return Settings.model_construct(_fields_set=set(self.fields_set), **self.values, **secrets)


def _what_to_set(name: str, *, missing: bool) -> str:
    state = f"has no {name}" if missing else f"has another {name} than the deploying process"
    return (
        f"node {socket.gethostname()} {state}: "
        f"set COLECIONADOR_{name.upper()} in its environment or the file colecionador_{name} "
        "in its COLECIONADOR_SECRETS_DIR, the same on every node (docs/operations/cluster.md)"
    )
