"""How anything here says what went wrong in one line: pure text (pydantic's errors, no
torch), so that training, tuning and the services all word a failure the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError


def first_line(text: str, limit: int | None = None) -> str:
    """The first non-empty line of ``text``, stripped, at most ``limit`` characters;
    ``""`` when there is none (never raises, unlike ``text.splitlines()[0]``)."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if limit is None else line[:limit]


def one_line(e: BaseException | str, limit: int = 500) -> str:
    """The first non-empty line of an error, at most ``limit`` characters; an error with
    no message is named by its type (``TimeoutError``), an empty string stays empty."""
    if isinstance(e, str):
        return first_line(e, limit)
    return (first_line(str(e)) or type(e).__name__)[:limit]


def typed_line(e: BaseException, limit: int = 500) -> str:
    """``Type: first line`` of an error (just ``Type`` when it has no message), at most
    ``limit`` characters in all."""
    said = first_line(str(e))
    return (f"{type(e).__name__}: {said}" if said else type(e).__name__)[:limit]


_WHERE = ("body", "query", "path", "header", "cookie")  # FastAPI's first part of a loc


def problem_words(err: Mapping[str, Any], root: str | None = None) -> str:
    """What one pydantic error says, in the words every door uses: an extra key is an
    ``unknown hyperparameter`` within the hyperparameters (``root``, or a loc under
    ``hyperparameters``) and an ``unknown field`` elsewhere; pydantic's ``Value error, ``
    prefix is dropped."""
    if err.get("type") == "extra_forbidden":
        loc = tuple(err.get("loc", ()))
        loc = loc[1:] if loc[:1] and loc[0] in _WHERE else loc
        within = root == "hyperparameters" or loc[:1] == ("hyperparameters",)
        return "unknown hyperparameter" if within else "unknown field"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def validation_message(
    err: ValidationError | Sequence[Mapping[str, Any]], root: str | None = "hyperparameters"
) -> str:
    """One line for a validation error, a ``field: reason`` per problem joined by ``; ``
    (the CLI's errors, a dead-letter reason); a problem of the whole model is ``root``'s,
    or has no field when ``root`` is None. The HTTP 422 says the same words per field
    (services/api)."""
    errors = err.errors() if isinstance(err, ValidationError) else err
    parts = []
    for e in errors:
        loc = ".".join(printable_text(str(p)) for p in e.get("loc", ())) or root
        msg = problem_words(e, root)
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def printable_text(text: str) -> str:
    """Text from a request (a field name, a value quoted in a reason) as one printable
    line: unchanged when printable, else escaped (``\\n``, ``\\x00``, ...)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
