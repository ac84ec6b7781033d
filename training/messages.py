"""How anything here says what went wrong in one line: pure text, no torch, so that
training, tuning and the services all word a failure the same way."""

from __future__ import annotations


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
