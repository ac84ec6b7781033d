"""The trust boundary's one door: a raw request in, a checked request or a rejection out.

Every edge (the queue's consumer, POST /jobs, the CLI, ``python -m services.jobs``) hands
what it received to ``admit``: bytes or text off the wire, a mapping, or a request an edge's
framework already parsed. It returns a ``TrainingRequest`` that parsed and passed the
operator's checks (services/intake/trust.py: roots, plugins, the gate's floor, a tuning space
against the request's own hyperparameters), or a ``Rejection`` with one printable line that
names the field. Nothing a request can make the parser or the checks raise escapes:
whatever the exception, the request is refused for what it is (dead-lettered, 422, exit 2),
and nothing has been written. No torch here: the ingress and the API import this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.config import Settings
from services.errors import printable
from services.intake.request import TrainingRequest, parse_request, unreadable
from services.intake.trust import check_request

MAX_REASON = 1000  # characters of a rejection's reason (a dead letter's x-reason header)
FIELD = re.compile(r"^[^\s:;]+(?=: )")  # "hyperparameters.lr: ..." names hyperparameters.lr


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused: ``reason`` is one printable line, ``field: what``
    where a field is to blame."""

    reason: str

    @property
    def field(self) -> str | None:
        match = FIELD.match(self.reason)
        return match.group(0) if match else None

    @property
    def message(self) -> str:
        """The reason without its field."""
        field = self.field
        return self.reason[len(field) + 2 :] if field else self.reason

    def detail(self) -> list[dict[str, Any]]:
        """FastAPI's shape of a 422's ``detail``: where (``body`` and the field's path)
        and what."""
        loc = ["body", *self.field.split(".")] if self.field else ["body"]
        return [{"loc": loc, "msg": self.message, "type": "value_error"}]

    def __str__(self) -> str:
        return self.reason


def rejection(e: BaseException) -> Rejection:
    """The rejection for an exception raised while parsing or checking a request: a
    ValueError says what is wrong in its text; anything else is a request the parser
    could not read, named by the exception's type."""
    return Rejection(printable(str(e) if isinstance(e, ValueError) else unreadable(e), MAX_REASON))


Raw = bytes | bytearray | memoryview | str | Mapping[str, Any] | TrainingRequest


def admit(raw: Raw, settings: Settings, *, local_user: bool = False) -> TrainingRequest | Rejection:
    """A checked request, or why not; never raises (an ``Exception`` of any kind from the
    parser or the checks is the request's rejection). ``local_user``: the CLI's user, whose
    own dataset and weights paths are not held to the operator's roots."""
    try:
        if isinstance(raw, TrainingRequest):
            request = raw
        elif isinstance(raw, Mapping):
            request = parse_request(dict(raw))
        else:
            request = parse_request(bytes(raw) if not isinstance(raw, str) else raw)
        check_request(request, settings, roots=not local_user)
    except Exception as e:  # noqa: BLE001 - whatever a request makes them raise refuses it
        return rejection(e)
    return request
