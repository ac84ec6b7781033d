"""How fast the service side notices what failed (issue 13), on a real local Ray cluster,
RabbitMQ and an embedded SQLite database:

- seconds from a job driver's death (SIGKILL) to its row changing (the reconciler records
  the death and resubmits the job as its next attempt), with the default
  ``reconcile_interval_s``;
- seconds from the broker's return (a loopback TCP proxy closed, then reopened) to the
  outbox's backlog being published.

Each is the median of ``--runs`` runs. Both are bounded by the reconciler's interval (a
pass every ``reconcile_interval_s``, 5 s by default) plus Ray's own detection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.ingress import Consumer
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs import lifecycle
from services.jobs.ray_jobs import RayJobs

AMQP = "amqp://guest:guest@127.0.0.1:{port}/"


def _wait(predicate, timeout: float, every: float = 0.05) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(every)
    raise TimeoutError(f"not within {timeout} s")


def _pids(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (the waiting driver)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def driver_death(settings: Settings, ray_jobs: RayJobs, runs: int) -> list[float]:
    out = []
    sf = session_factory(settings.db_url)
    for i in range(runs):
        job, _ = create_job(
            settings,
            TrainingRequest(batch_id=f"bench-death-{uuid.uuid4().hex[:8]}", dataset_uri="/nowhere"),
        )
        marker = f"colecionador-bench-{uuid.uuid4().hex[:8]}"
        sid = ray_jobs.client.submit_job(
            entrypoint=f"python -c 'import signal; signal.pause()' {marker}",
            submission_id=f"{marker}-{i}",
        )
        with sf() as s:
            repo.record_attempt(s, job.id, sid)
            repo.start_job(s, job.id, sid)
        _wait(lambda m=marker: _pids(m), 120)
        for pid in _pids(marker):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        def changed(job_id: int = job.id) -> bool:
            with sf() as s:
                return repo.get_job(s, job_id).attempts == 2

        _wait(changed, 120)
        out.append(time.monotonic() - killed)
    return out


def broker_return(settings: Settings, proxy, runs: int, events: int = 20) -> list[float]:
    out = []
    sf = session_factory(settings.db_url)
    for _ in range(runs):
        proxy.close()
        for _ in range(events):
            job, _ = create_job(
                settings,
                TrainingRequest(
                    batch_id=f"bench-outbox-{uuid.uuid4().hex[:8]}", dataset_uri="/nowhere"
                ),
            )
            lifecycle.cancel(settings, job.id, "benchmark")  # its event waits in the outbox
        with sf() as s:
            assert repo.count_pending_events(s) >= events
        proxy.open()

        def drained() -> bool:
            with sf() as s:
                return repo.count_pending_events(s) == 0

        out.append(_wait(drained, 120))
    return out


def main(argv: list[str] | None = None) -> None:
    from tests.amqp import delete_queues
    from tests.raycluster import LocalRayCluster
    from tests.tcpproxy import TcpProxy

    p = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="colecionador-bench-"))
    cluster = LocalRayCluster(num_cpus=2)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    suffix = uuid.uuid4().hex[:6]
    proxy = TcpProxy(5672).open()
    settings = Settings(
        home=home,
        publish_events=True,
        broker_url=proxy.url(AMQP),
        requests_queue=f"training.requests.bench-{suffix}",
        events_queue=f"ModelEvaluation.bench-{suffix}",
        ray_dashboard_url=cluster.dashboard_url,
        ray_auth_token_path=cluster.token_path,
    )
    consumer = Consumer(settings)
    thread = threading.Thread(target=lambda: asyncio.run(consumer.run()), daemon=True)
    thread.start()
    try:
        _wait(lambda: consumer.stats["consuming"], 60)
        deaths = driver_death(settings, RayJobs(settings), args.runs)
        backlog = broker_return(settings, proxy, args.runs)
    finally:
        consumer.stop()
        thread.join(30)
        proxy.close()
        cluster.stop()
        delete_queues(
            settings.requests_queue, settings.requests_queue + ".dead", settings.events_queue
        )
    print(
        f"\nJob lifecycle (reconcile_interval_s {settings.reconcile_interval_s:g}, "
        f"{args.runs} runs each)"
    )
    print(f"{'what':<52} {'p50 s':>6}  runs")
    print(
        f"{'driver SIGKILLed -> row changed (next attempt)':<52} "
        f"{statistics.median(deaths):6.1f}  " + ", ".join(f"{v:.1f}" for v in deaths)
    )
    print(
        f"{'broker back -> outbox backlog of 20 published':<52} "
        f"{statistics.median(backlog):6.1f}  " + ", ".join(f"{v:.1f}" for v in backlog)
    )


if __name__ == "__main__":
    main()
