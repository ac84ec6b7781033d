"""What the steps of a job share: the failure that names its step, and the Ray
connection (local, or the cluster at settings.ray_address)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from services.config import Settings


class StepFailed(Exception):
    """A step of the job failed; ``str()`` is the one-line reason stored on the job."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


def one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return first[:500]


# Ray's own C++ processes (raylet, core workers) log at this level and above; a local
# Ray inherits it from the driver's environment.
QUIET_BACKEND_LEVEL = "fatal"


def ray_logging(settings: Settings, environ: Mapping[str, str]) -> tuple[int, dict[str, str]]:
    """The Python level of Ray's loggers and the environment for ``ray.init``.

    A one-shot command that starts its own local Ray (no ``ray_address``) keeps the
    workers' output (the epoch lines) but not Ray's internal chatter: the ``ray``
    loggers at ERROR (no token-authentication notice) and the C++ core worker and raylet
    at fatal (``RAY_BACKEND_LOG_LEVEL``; its shutdown of helper actors logs ``E`` lines
    in a run that worked). On a cluster Ray logs as its operator set it. A level the
    user exported wins."""
    if settings.ray_address:
        return logging.WARNING, {}
    env = {} if "RAY_BACKEND_LOG_LEVEL" in environ else {
        "RAY_BACKEND_LOG_LEVEL": QUIET_BACKEND_LEVEL}
    return logging.ERROR, env


def init_ray(settings: Settings) -> None:
    import ray
    if ray.is_initialized():
        return
    level, env = ray_logging(settings, os.environ)
    os.environ.update(env)
    logging.getLogger("ray").setLevel(level)
    ray.init(address=settings.ray_address, logging_level=level,
             configure_logging=True, log_to_driver=True)
