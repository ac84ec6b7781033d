"""A model named by reference, as a predict request names it: ``NAME`` (the version behind
``production``), ``NAME@ALIAS`` (behind that alias) or ``NAME@vN`` (version N itself).

``ModelRef.parse`` is the format, checked at the edge with the rest of the request;
``resolve`` finds the version in the database (the CLI checks it before recording a job,
the job's driver when it starts: a reference that names nothing fails the job, saying so).
An alias spelled ``v`` and digits cannot be named this way: ``@v3`` is version 3. No torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.db.models import ModelVersion
from services.db.session import session_factory

DEFAULT_ALIAS = "production"
PATTERN = re.compile(
    r"(?P<name>[\w.\-]{1,200})"
    r"(?:@(?:v(?P<version>[1-9]\d{0,9})|(?P<alias>[a-z][a-z0-9_\-]{0,49})))?",
    re.ASCII,
)


@dataclass(frozen=True)
class ModelRef:
    """A model's name and either a pinned version or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """The reference ``text`` spells; ValueError saying the expected form otherwise."""
        m = PATTERN.fullmatch(text)
        if (
            m is None
            or m["name"].strip(".") == ""
            or int(m["version"] or 0) > 2**31 - 1
            or re.fullmatch(r"v\d+", m["alias"] or "")  # v0, v007: versions, never aliases
        ):
            raise ValueError(f"expected NAME, NAME@ALIAS or NAME@vN, not {text[:100]!r}")
        if m["version"]:
            return cls(m["name"], version=int(m["version"]))
        return cls(m["name"], alias=m["alias"] or DEFAULT_ALIAS)

    def __str__(self) -> str:
        return f"{self.name}@v{self.version}" if self.version else f"{self.name}@{self.alias}"


def resolve(s: Session, ref: ModelRef) -> ModelVersion:
    """The version ``ref`` names; LookupError saying what is missing otherwise."""
    version = ref.version
    if version is None:
        version = repo.version_for_alias(s, ref.name, ref.alias or DEFAULT_ALIAS)
        if version is None:
            raise LookupError(f"no version of model {ref.name!r} behind alias {ref.alias!r}")
    mv = repo.get_version(s, ref.name, version)
    if mv is None:
        raise LookupError(f"model {ref.name!r} has no version {version}")
    return mv


def unresolved(settings: Settings, text: str) -> str | None:
    """Why the reference ``text`` names no version today (``model: ...``, a rejection's
    reason), or None: what the edges that read the database (the CLI, POST /jobs) check
    before recording a predict job."""
    try:
        with session_factory(settings.db_url)() as s:
            resolve(s, ModelRef.parse(text))
    except (LookupError, ValueError) as e:
        return f"model: {e}"
    return None
