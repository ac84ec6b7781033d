"""What the steps of a job share: the failure that names its step, and the Ray
connection (local, or the cluster at settings.ray_address)."""

from __future__ import annotations

import logging

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


def init_ray(settings: Settings) -> None:
    import ray
    if ray.is_initialized():
        return
    ray.init(address=settings.ray_address, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)
