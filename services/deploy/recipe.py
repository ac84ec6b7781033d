"""What a running thing was deployed with, so that ``up`` can tell whether it still fits.

A recipe holds the effective settings that are not secret (as the ingress passes them to
its job drivers: services.jobs.ray_jobs.settings_env), a salted scrypt hash of the secret
ones (tokens, keys, URLs with credentials) and the thing's own options. It is stored on
the thing itself: the ingress actor returns it (``deployed_as``), a Serve deployment
carries it as its ``user_config``, which Serve's status and dashboard show to whoever can
read them: hence a slow, salted hash, never the secrets or a plain digest of them (a
short password would fall to a dictionary at a plain SHA-256's speed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from services.config import Settings
from services.jobs.ray_jobs import settings_env

KEY = "colecionador"  # the key of the recipe in a Serve deployment's user_config
SCHEME = "scrypt"
# scrypt's cost: 16 MiB and ~50 ms a hash here, per guess for whoever reads the dashboard
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 2**20}


class Recipe(BaseModel):
    """The settings (non-secret, as COLECIONADOR_* variables), the sealed secrets and
    the options one thing was deployed with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    settings: dict[str, str]
    secrets: str  # scrypt$<salt hex>$<digest hex> of the secret settings
    options: dict[str, Any]

    def stored(self) -> dict[str, Any]:
        """The recipe as JSON-ready data, for a user_config or an actor's state."""
        return self.model_dump(mode="json")


def split_settings(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """(non-secret, secret) settings as COLECIONADOR_* variables: the first is what the
    ingress hands its job drivers; the second everything it keeps home."""
    public = settings_env(settings)
    every = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        every[f"COLECIONADOR_{name.upper()}"] = str(value)
    return public, {k: v for k, v in every.items() if k not in public}


def _material(secret: dict[str, str]) -> bytes:
    return json.dumps(sorted(secret.items())).encode()


@lru_cache(maxsize=32)
def _scrypt(material: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(material, salt=salt, **SCRYPT)


def seal(secret: dict[str, str], salt: bytes | None = None) -> str:
    """A salted scrypt hash of the secret settings (names and values)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    return f"{SCHEME}${salt.hex()}${_scrypt(_material(secret), salt).hex()}"


def sealed_equal(sealed: str, secret: dict[str, str]) -> bool:
    """Whether ``sealed`` (from :func:`seal`) is the hash of these secret settings."""
    try:
        scheme, salt, digest = sealed.split("$")
        if scheme != SCHEME:
            return False
        again = _scrypt(_material(secret), bytes.fromhex(salt))
        return hmac.compare_digest(again, bytes.fromhex(digest))
    except ValueError:  # not a seal of ours
        return False


def recipe(kind: str, settings: Settings, options: dict[str, Any]) -> Recipe:
    """The recipe of a thing of ``kind`` deployed now with these settings and options."""
    public, secret = split_settings(settings)
    return Recipe(kind=kind, settings=public, secrets=seal(secret), options=options)


def read(stored: Any) -> Recipe | None:
    """A stored recipe back, or None when it is missing or not one of ours (a thing
    deployed by ``colecionador serve`` or by an older release)."""
    if not isinstance(stored, dict):
        return None
    try:
        return Recipe.model_validate(stored)
    except ValidationError:
        return None


def differences(stored: Recipe | None, wanted: Recipe, settings: Settings) -> list[str]:
    """What differs between the recipe a thing runs with and the wanted one, by name
    (never by value): settings (COLECIONADOR_*), ``secrets``, option names; ``no recipe``
    when the running thing has none. Empty: it fits."""
    if stored is None:
        return ["no recipe"]
    if stored.kind != wanted.kind:
        return ["kind"]
    names = stored.settings.keys() | wanted.settings.keys()
    out = sorted(n for n in names if stored.settings.get(n) != wanted.settings.get(n))
    if not sealed_equal(stored.secrets, split_settings(settings)[1]):
        out.append("secrets")
    options = stored.options.keys() | wanted.options.keys()
    out += sorted(f"--{o.replace('_', '-')}" for o in options if _differ(stored, wanted, o))
    return out


def _differ(a: Recipe, b: Recipe, option: str) -> bool:
    # compared as the JSON a user_config keeps (a tuple and a list are the same option)
    return json.dumps(a.options.get(option)) != json.dumps(b.options.get(option))
