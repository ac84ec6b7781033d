"""Ray's side of a job: connecting to the cluster and talking to its job server.

One place for what was spread over the CLI, the API, the ingress and the driver: the
connection (a local Ray for one-shot commands, or the cluster at ``ray_address``), the job
server's auth headers, idempotent submission (the submission id is derived from our job id,
so a retry finds the Ray job it already submitted), existence, and stop-and-wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from services.config import Settings
from services.replica_settings import carries_credentials as carries_credentials  # re-exported
from services.replica_settings import stays_on_node

NAMESPACE = "colecionador"
STOP_WAIT_S = 30.0  # how long stop_and_wait waits for the Ray job to end


def submission_id(job_id: int, batch_id: str, attempt: int = 1) -> str:
    """The Ray job submission id of attempt ``attempt`` of our job ``job_id``: derived
    from the row, so a retry finds the Ray job it already submitted; the batch's hash
    keeps job 1 of a new database apart from job 1 of an old one on the same cluster."""
    digest = hashlib.sha1(batch_id.encode()).hexdigest()[:8]
    base = f"colecionador-job-{job_id}-{digest}"
    return base if attempt <= 1 else f"{base}-attempt-{attempt}"


def current_submission_id() -> str | None:
    """The Ray job submission id when this process is a Ray job's driver."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        sid: str | None = json.loads(raw).get("metadata", {}).get("job_submission_id")
        return sid
    except (ValueError, AttributeError):
        return None


# A local one-shot Ray has no node that can be preempted or drained; Train V2's
# PreemptionWatcher actor only makes its controller's core worker log an ``E`` line
# (core_worker.cc: constructor arguments in the object store and max_restarts > 0).
QUIET_LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# Train V2's controller polls its workers every 2 s: a report waits for the next poll (a
# worker's queue holds one) and so does the run's end, seconds a short local job feels;
# on one machine a poll is two local actor calls, cheap at 0.5 s.
FAST_LOCAL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def local_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """What a local one-shot Ray is started with for speed (none on a cluster, where its
    operator sets it); what the user exported wins."""
    if settings.ray_address:
        return {}
    return {k: v for k, v in FAST_LOCAL_ENV.items() if k not in environ}


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
    """Join the cluster at ``settings.ray_address``, or start a local Ray (one-shot
    commands) with Ray's own logging quiet; a no-op when already connected."""
    import ray

    if ray.is_initialized():
        return
    level, env = ray_logging(settings, os.environ)
    os.environ.update({**env, **local_env(settings, os.environ)})
    logging.getLogger("ray").setLevel(level)
    ray.init(
        address=settings.ray_address,
        logging_level=level,
        configure_logging=True,
        log_to_driver=True,
    )


def connect_ray(
    settings: Settings,
    *,
    start_local: bool = False,
    local_env: Callable[[], dict[str, str]] | None = None,
) -> bool:
    """Join a running cluster (``settings.ray_address``, else a local ``ray start``) in
    colecionador's namespace, for the long-lived commands (ingress, serve). With
    ``start_local`` and no cluster running, start a local Ray (its processes inherit
    this one's environment, plus what ``local_env()`` gives); True if it was started."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=settings.ray_address or "auto",
            namespace=NAMESPACE,
            logging_level="WARNING",  # type: ignore[arg-type]  # a name works: Ray's default is "info"
        )
        return False
    except ConnectionError:
        if not start_local or settings.ray_address:
            raise
    os.environ.update(local_env() if local_env else {})
    ray.init(namespace=NAMESPACE, logging_level="WARNING")  # type: ignore[arg-type]  # as above
    return True


class EmbeddedOnCluster(RuntimeError):
    """A process on a cluster of several nodes was started with one node's embedded
    defaults (a local store, SQLite, the default broker): the message says what to set."""


def alive_nodes() -> int:
    """How many nodes the connected Ray cluster has alive now."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def refuse_embedded(settings: Settings, uses: tuple[str, ...]) -> None:
    """EmbeddedOnCluster when the connected cluster has several nodes and ``settings``
    would use an embedded default for one of ``uses`` (Settings.embedded_on_cluster)."""
    problem = settings.embedded_on_cluster(alive_nodes(), uses)
    if problem is not None:
        raise EmbeddedOnCluster(problem)


def auth_headers(settings: Settings) -> dict[str, str]:
    """Bearer token for the Ray dashboard / job server when token auth is on."""
    path = settings.ray_auth_token_path or os.environ.get("RAY_AUTH_TOKEN_PATH")
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token and path and os.path.exists(path):
        token = open(path).read().strip()
    if not token:
        default = os.path.expanduser("~/.ray/auth_token")
        if os.environ.get("RAY_AUTH_MODE") == "token" and os.path.exists(default):
            token = open(default).read().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as COLECIONADOR_* variables, for the job drivers the ingress submits,
    less every secret: a Ray job's runtime_env is readable by anyone with the dashboard
    (secret settings never travel, nor does any value that is a URL carrying credentials).
    The drivers read secrets from their node (environment or COLECIONADOR_SECRETS_DIR)."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if stays_on_node(name, value):
            continue  # tokens, keys and URLs with credentials: never
        if isinstance(value, SecretStr):  # a URL without credentials travels
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        env[f"COLECIONADOR_{name.upper()}"] = text
    return env


class JobServerError(RuntimeError):
    """The job server answered with an error status (``status``: the HTTP code). The SDK
    raises a RuntimeError whose text holds the code; its text can hold any number too (a
    submission id of job 404, a proxy on port 8404), so the code is kept apart."""

    def __init__(self, status: int, text: str):
        super().__init__(f"Request failed with status code {status}: {text}.")
        self.status = status


def job_missing(exc: Exception) -> bool:
    """Whether the job server said it does not know the job: its 404, never a guess
    from the error's text."""
    return isinstance(exc, JobServerError) and exc.status == 404


def _client(address: str | None, headers: dict[str, str]) -> Any:
    """Ray's JobSubmissionClient, raising JobServerError (with the status) on an error
    answer where the SDK raises a bare RuntimeError (``_raise_error``, its one place)."""
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        def _raise_error(self, r: Any) -> None:
            raise JobServerError(r.status_code, r.text)

    return Client(address, headers=headers)


class RayJobs:
    """Ray's job server through the Job Submission SDK: submit (idempotent), exists,
    status, stop-and-wait."""

    def __init__(self, settings: Settings, address: str | None = None):
        self.settings = settings
        self.client = _client(address or settings.ray_dashboard_url, auth_headers(settings))

    def exists(self, sid: str) -> bool:
        return self.status(sid)[0] is not None

    def submit(self, job_id: int, batch_id: str, attempt: int = 1) -> str:
        """Submit ``python -m services.jobs --job-id N`` as attempt ``attempt`` unless Ray
        already has that attempt; returns its submission id."""
        sid = submission_id(job_id, batch_id, attempt)
        if not self.exists(sid):
            try:
                self.client.submit_job(
                    entrypoint=f"{sys.executable} -m services.jobs --job-id {job_id}",
                    submission_id=sid,
                    runtime_env={"env_vars": settings_env(self.settings)},
                    # placed on purpose, reserving no CPU a Train worker would wait for
                    entrypoint_num_cpus=0,
                    entrypoint_resources=dict(self.settings.driver_resources) or None,
                    metadata={
                        "colecionador_job_id": str(job_id),
                        "colecionador_attempt": str(attempt),
                    },
                )
            except RuntimeError as e:
                # a message and its duplicate handled at once both saw no Ray job: the
                # one that lost the race finds the job the other submitted
                if "already exists" not in str(e):
                    raise
        return sid

    def stop_and_wait(self, sid: str, wait_s: float = STOP_WAIT_S) -> str | None:
        """Stop the Ray job and wait (bounded) until Ray reports it ended: ``stop_job`` can
        return True while a pending job keeps going (ray #58353), so the real status is
        checked, and the stop repeated while the job has not ended. Returns the final
        status, or None when Ray does not know the job. TimeoutError if it did not end
        within ``wait_s``."""
        deadline = time.monotonic() + wait_s
        next_stop = 0.0
        while True:
            try:
                if time.monotonic() >= next_stop:
                    self.client.stop_job(sid)
                    next_stop = time.monotonic() + 2.0
                status = self.client.get_job_status(sid)
            except RuntimeError as exc:
                if job_missing(exc):
                    return None
                raise
            if status.is_terminal():
                return str(status.value)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Ray job {sid} is still {status.value} {wait_s:.0f} s after the stop request"
                )
            time.sleep(0.2)

    def status(self, sid: str) -> tuple[str | None, str | None]:
        """Ray's status of a job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its
        message; (None, None) when Ray does not know it."""
        try:
            info = self.client.get_job_info(sid)
        except RuntimeError as exc:
            if job_missing(exc):
                return None, None
            raise
        return str(info.status.value), info.message
