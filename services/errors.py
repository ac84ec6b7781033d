"""How the services say what went wrong: one line per failure, naming the step."""

from __future__ import annotations

from training.messages import (
    first_line,
    one_line,
    printable_text,
    problem_words,
    typed_line,
    validation_message,
)

__all__ = [
    "StepFailed",
    "first_line",
    "one_line",
    "printable",
    "problem_words",
    "typed_line",
    "validation_message",
]


def printable(text: str, limit: int = 1000) -> str:
    """``text`` as one printable line (training.hyperparams.printable_text's escaping) of
    at most ``limit`` characters."""
    out = printable_text(text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class StepFailed(Exception):
    """A step of the job failed; ``str()`` is the one-line reason stored on the job."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason
