"""The job driver's sender of MLflow records (services/events/mlflow_outbox.py): a daemon
thread that drains the job's model's records while the job runs, so no training step ever
waits on MLflow, and one bounded flush when it ends."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from services.config import Settings
from services.events import mlflow_outbox
from services.events.mlflow_outbox import Drained, drain_quietly, enabled


class Pump:
    """Drains one model's records in a daemon thread while its job runs: every ``every``
    seconds, backing off (up to 30 s) while the server is away, so no training step ever
    waits on MLflow. ``stop`` gives the last records (the version, the end) one bounded
    flush: twice the client timeout at most, none while the server is known to be away."""

    def __init__(self, settings: Settings, model_name: str, every: float = 1.0):
        self.settings, self.model_name, self.every = settings, model_name, every
        self._stop = threading.Event()
        self._flush_until: float | None = None
        self._thread = threading.Thread(target=self._loop, name="mlflow-pump", daemon=True)
        self.drains: list[Drained] = []
        self.cpu_s: float | None = None  # the thread's CPU time, once it has ended

    def start(self) -> Pump:
        self._thread.start()
        return self

    def _loop(self) -> None:
        backoff, next_try = 0.0, 0.0
        while not self._stop.wait(self.every):
            if time.monotonic() >= next_try:
                backoff, next_try = self._once(backoff, None)
        if time.monotonic() >= next_try:
            self._once(backoff, self._flush_until)
        self.cpu_s = time.thread_time()

    def _once(self, backoff: float, deadline: float | None) -> tuple[float, float]:
        done = drain_quietly(self.settings, model_name=self.model_name, deadline=deadline)
        self.drains.append(done)
        if done.failed is None:
            return 0.0, 0.0
        backoff = min(30.0, max(1.0, 2 * backoff))
        return backoff, time.monotonic() + backoff

    def stop(self) -> None:
        flush_s = 2.0 * self.settings.mlflow_timeout_s
        self._flush_until = time.monotonic() + flush_s
        self._stop.set()
        self._thread.join(flush_s)


def start_pump(settings: Settings, model_name: str) -> Pump | None:
    """A running Pump for the model's records, or None when MLflow is off."""
    return Pump(settings, model_name).start() if enabled(settings) else None


@contextlib.contextmanager
def tracking(settings: Settings, job: Any) -> Iterator[Pump | None]:
    """The block of a started job, tracked when MLflow is on: the run's tags (this
    attempt's) staged now, a Pump sending the records while the block runs, stopped
    (one bounded flush) when it ends; the ingress sends what is left."""
    mlflow_outbox.record(settings, mlflow_outbox.stage_run, job, max(1, job.attempts or 0))
    pump = start_pump(settings, job.model_name)
    try:
        yield pump
    finally:
        if pump is not None:
            pump.stop()
