"""Every job ends: compare each active row with what Ray says of its Ray job.

``decide`` is pure (Ray Train's failure policy is the model: a decision returned, the
caller acts); ``Reconciler.pass_once`` reads the rows and Ray, and applies each decision:

- a queued job without a Ray job is submitted (attempt 1), all of them, every pass;
- a Ray job that is FAILED, STOPPED, SUCCEEDED or gone while its row is still active
  (its driver died: OOM killer, a lost node, SIGKILL) is resubmitted as the next attempt,
  which resumes from the latest checkpoint in the store, up to ``max_job_attempts``;
- past that, the job is marked ``failed`` with what Ray said, and its event goes out;
- a Ray job the job server does not know at all was lost with its cluster (a head
  replaced without GCS fault tolerance forgets every job), or one Ray failed because its
  supervisor was gone after a head restart (``SUPERVISOR_LOST``): resubmitted, and that
  attempt is recorded ``LOST`` and not counted against ``max_job_attempts`` (the job did
  not fail; the cluster did), up to ``MAX_LOST_ATTEMPTS`` times;
- a job running longer than ``max_job_seconds`` since it first started is marked
  ``failed`` (``limit: ...``) with its event, then its Ray job is stopped.

A cancelled job is not active, so a Ray job stopped by a cancel is never resubmitted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.errors import first_line
from services.jobs import lifecycle
from services.jobs.ray_jobs import RayJobs
from services.metrics import process as metrics
from services.statuses import ACTIVE_STATUSES, JobStatus

log = logging.getLogger("colecionador.reconciler")

RUNNING = ("PENDING", "RUNNING")
LOST = "LOST"  # an attempt's Ray status when its cluster forgot it
MAX_LOST_ATTEMPTS = 5  # clusters replaced under one job before it fails anyway
# what Ray's job manager says of a job it finds RUNNING whose supervisor actor no longer
# exists: a head restarted with its GCS kept (GCS fault tolerance) lost the driver with it
SUPERVISOR_LOST = "failed to get job supervisor"


@dataclass(frozen=True)
class Decision:
    action: Literal["wait", "submit", "resubmit", "fail", "stop"]
    reason: str | None = None
    counts: bool = True  # a resubmit whose ended attempt counts as one the job failed


def decide(
    status: str,
    ray_job_id: str | None,
    ray_status: str | None,
    ray_message: str | None,
    attempts: int,
    max_attempts: int,
    running_s: float | None = None,
    max_seconds: float | None = None,
    lost: int = 0,
) -> Decision:
    """What to do with one active job, given Ray's word on its latest Ray job, how long
    it has run since it first started (``running_s``; None: not started) and how many of
    its ``attempts`` were lost with a cluster (``lost``: they do not count)."""
    if max_seconds is not None and running_s is not None and running_s > max_seconds:
        return Decision(
            "stop",
            f"limit: the job ran {running_s:.0f} s, over the wall-clock limit of "
            f"{max_seconds:.0f} s (COLECIONADOR_MAX_JOB_SECONDS)",
        )
    if ray_job_id is None:
        # queued: submit it; training without a Ray job is a local `colecionador train`
        return Decision("submit") if status == JobStatus.QUEUED else Decision("wait")
    if ray_status in RUNNING:
        return Decision("wait")
    if ray_status is None and lost < MAX_LOST_ATTEMPTS:
        return Decision(
            "resubmit",
            f"Ray job {ray_job_id} is gone: the cluster that ran it was replaced (not "
            "counted against COLECIONADOR_MAX_JOB_ATTEMPTS)",
            counts=False,
        )
    if (
        ray_status == "FAILED"
        and SUPERVISOR_LOST in (ray_message or "")
        and lost < MAX_LOST_ATTEMPTS
    ):
        return Decision(
            "resubmit",
            f"Ray job {ray_job_id} was lost with the head that ran its driver (Ray: "
            f"{SUPERVISOR_LOST}; not counted against COLECIONADOR_MAX_JOB_ATTEMPTS)",
            counts=False,
        )
    said = f"Ray job {ray_job_id} {ray_status or 'is gone'}"
    if ray_message:
        said += f": {first_line(ray_message, 300)}"
    failed = attempts - lost
    if failed < max_attempts and ray_status is not None:
        return Decision("resubmit", said)
    if ray_status is None:
        said += f", lost with {lost} clusters"
    return Decision("fail", f"driver: {said} (attempt {failed} of {max_attempts})")


class Reconciler:
    """One pass at a time; the ingress runs it every ``reconcile_interval_s``."""

    def __init__(self, settings: Settings, ray_jobs: RayJobs):
        self.settings, self.ray_jobs = settings, ray_jobs
        self.stats = {"passes": 0, "submitted": 0, "resubmitted": 0, "failed": 0, "over_limit": 0}

    def submit(self, job_id: int, attempt: int = 1) -> str:
        """Submit attempt ``attempt`` of a job and record it (idempotent)."""
        with session_factory(self.settings.db_url)() as s:
            job = repo.get_job(s, job_id)
            assert job is not None  # an active job, just listed
            sid = self.ray_jobs.submit(job_id, job.batch_id, attempt)
            repo.record_attempt(s, job_id, sid)
        return sid

    def pass_once(self) -> dict[str, int]:
        t0, before = time.perf_counter(), dict(self.stats)
        sf = session_factory(self.settings.db_url)
        with sf() as s:
            jobs = [
                (j.id, j.status, j.ray_job_id, j.attempts, _running_s(j.started_at))
                for j in repo.active_jobs(s)
            ]
            lost = {j[0]: repo.count_attempts(s, j[0], LOST) for j in jobs if j[3] > 1}
        for job_id, status, sid, attempts, running_s in jobs:
            ray_status, message = self.ray_jobs.status(sid) if sid else (None, None)
            d = decide(
                status,
                sid,
                ray_status,
                message,
                attempts,
                self.settings.max_job_attempts,
                running_s,
                self.settings.max_job_seconds,
                lost.get(job_id, 0),
            )
            if d.action == "wait":
                continue
            if d.action == "stop":
                self._stop(job_id, sid, d.reason or "limit")
                continue
            if d.action == "submit":
                self.submit(job_id)
                self.stats["submitted"] += 1
                continue
            assert sid is not None and d.reason is not None  # resubmit, fail: of a Ray job
            with sf() as s:  # Ray's word came after the row: is it still the same?
                row = repo.get_job(s, job_id)
                if row is None or row.status not in ACTIVE_STATUSES or row.ray_job_id != sid:
                    continue
                ended_as = LOST if not d.counts else (ray_status or "GONE")
                repo.end_attempt(s, job_id, sid, ended_as, d.reason)
            if d.action == "resubmit":
                log.warning(
                    "job %s: %s; resubmitting as attempt %s", job_id, d.reason, attempts + 1
                )
                self.submit(job_id, attempts + 1)
                self.stats["resubmitted"] += 1
            elif lifecycle.fail(self.settings, job_id, d.reason) is not None:
                log.error("job %s failed: %s", job_id, d.reason)
                self.stats["failed"] += 1
        self.stats["passes"] += 1
        metrics.reconciler_pass(before, self.stats, time.perf_counter() - t0)  # Ray's agent
        return dict(self.stats)

    def _stop(self, job_id: int, sid: str | None, reason: str) -> None:
        """Over its wall-clock limit: ``failed`` at once with its event (as a cancel is
        ``cancelled`` at once, so nothing the driver does afterwards ends it otherwise),
        then its Ray job is stopped; a stop that does not go through is logged, not tried
        again (the row has ended, so no later pass sees the job)."""
        if lifecycle.fail(self.settings, job_id, reason) is not None:
            log.error("job %s failed: %s", job_id, reason)
            self.stats["failed"] += 1
            self.stats["over_limit"] += 1
        if sid is not None:
            try:
                self.ray_jobs.client.stop_job(sid)
            except Exception as e:  # noqa: BLE001 - the job server is away: logged
                log.warning("job %s: its Ray job %s could not be stopped: %s", job_id, sid, e)


def _running_s(started_at: datetime | None) -> float | None:
    if started_at is None:
        return None
    if started_at.tzinfo is None:  # SQLite returns naive UTC datetimes
        started_at = started_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - started_at).total_seconds()
