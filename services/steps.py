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


# A local one-shot Ray has no node that can be preempted or drained; Train V2's
# PreemptionWatcher actor only makes its controller's core worker log an ``E`` line
# (core_worker.cc: constructor arguments in the object store and max_restarts > 0).
QUIET_LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def ray_logging(settings: Settings, environ: Mapping[str, str]) -> tuple[int, dict[str, str]]:
    """The Python level of Ray's loggers and the environment for ``ray.init``.

    A one-shot command that starts its own local Ray (no ``ray_address``) keeps the
    workers' output (the epoch lines) but not Ray's internal chatter: the ``ray``
    loggers at ERROR (no token-authentication notice) and no preemption watcher (its
    set-up is what Ray's C++ core worker reports as an error). ``RAY_BACKEND_LOG_LEVEL``
    is left alone: Ray 2.60 announces that variable with an ``I`` line from every one of
    its processes, more noise than it removes. On a cluster Ray logs as its operator set
    it. What the user exported wins."""
    if settings.ray_address:
        return logging.WARNING, {}
    return logging.ERROR, {k: v for k, v in QUIET_LOCAL_ENV.items() if k not in environ}


def init_ray(settings: Settings) -> None:
    import ray
    if ray.is_initialized():
        return
    level, env = ray_logging(settings, os.environ)
    os.environ.update(env)
    logging.getLogger("ray").setLevel(level)
    ray.init(address=settings.ray_address, logging_level=level,
             configure_logging=True, log_to_driver=True)
