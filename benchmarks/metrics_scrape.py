"""What a Prometheus scrape of GET /metrics costs with 1,000 jobs in the database.

The rows are written through the repository as the services write them: of ``--jobs``
jobs, 80 % succeeded (10 epoch rows each, a version approved or rejected by the gate, a
published event), 15 % failed (a third of them after 2 or 3 attempts), 3.5 % cancelled,
1 % queued and 0.5 % training (with epochs), and 20 events wait in the outbox. Then,
``--scrapes`` times each, on SQLite and on PostgreSQL (COLECIONADOR_TEST_PG_URL, default
the tests' server, in a database made and dropped here):

- ``collector``: the route's own work, ``stats.snapshot`` in a session and ``render``;
- ``GET /metrics``: the whole route on the app in-process (httpx's ASGI transport), the
  broker asked once every 5 s (its answer kept in between, as on a server).

    python -m benchmarks.metrics_scrape [--jobs 1000] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text, update

PG_ADMIN_URL = os.environ.get(
    "COLECIONADOR_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("COLECIONADOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _status(i: int, n: int) -> str:
    share = i / n
    for limit, status in ((0.8, "success"), (0.95, "failed"), (0.985, "cancelled")):
        if share < limit:
            return status
    return "queued" if share < 0.995 else "training"


def record(url: str, n: int) -> None:
    """``n`` jobs in the mix the module's docstring gives, through the repository."""
    from services.db import repo
    from services.db.models import TrainingJob
    from services.db.session import session_factory, upgrade

    upgrade(url)
    t0 = datetime.now(UTC) - timedelta(days=2)
    with session_factory(url)() as s:
        for i in range(n):
            status = _status(i, n)
            job, _ = repo.create_job(
                s, batch_id=f"b-{i}", dataset_uri="s3://d/x/", model_name=f"m{i % 5}",
                hyperparameters={"phase1_epochs": 5},
            )  # fmt: skip
            started = t0 + timedelta(minutes=i)
            if status in ("success", "failed", "training"):
                for attempt in range(1 + (i % 3 if status == "failed" and i % 3 else 0)):
                    repo.record_attempt(s, job.id, f"ray-{job.id}-{attempt}")
            if status in ("success", "training"):
                for epoch in range(1, 11):
                    row = {"phase": 1 + (epoch > 5), "loss": 1 / epoch, "epoch_time_s": 9.5}
                    repo.record_epoch(s, job.id, epoch, {**row, "images_per_s": 140.0})
            values: dict = {"status": status, "created_at": started - timedelta(seconds=20)}
            if status != "queued":
                values["started_at"] = started
            if status in ("success", "failed", "cancelled"):
                values["finished_at"] = started + timedelta(seconds=300 + i % 600)
                values["training_time_s"] = 200.0 + i % 400
            s.execute(update(TrainingJob).where(TrainingJob.id == job.id).values(**values))
            if status == "success":
                gate = "approved" if i % 4 else "rejected"
                repo.reserve_version(
                    s, job.model_name, job_id=job.id, accuracy=0.9, precision=0.9, recall=0.9,
                    f1=0.9, status=gate, gate={"status": gate, "rules": []}, model_path="x",
                )  # fmt: skip
            repo.add_event(s, uuid.uuid4().hex, job.id, "ModelEvaluation", "q", {"i": i})
            s.commit()
        s.execute(text("UPDATE events SET published_at = created_at"))
        for i in range(20):
            repo.add_event(s, uuid.uuid4().hex, None, "ModelEvaluation", "q", {"pending": i})
        s.commit()


def _times(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm: connections, statement caches
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(url: str, scrapes: int, home: Path) -> dict[str, object]:
    import httpx

    from services.api import create_app
    from services.config import Settings
    from services.db.session import session_factory
    from services.metrics.collector import render, timed_snapshot

    def collector() -> bytes:
        with session_factory(url)() as s:
            snap, took = timed_snapshot(s)
        return render(snap, None, took)

    body = collector()
    settings = Settings(home=home, database_url=url, api_read_token=None, broker_url=AMQP_URL)
    app = create_app(settings)

    async def route() -> list[float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            out = []
            for _ in range(scrapes + 1):
                t0 = time.perf_counter()
                r = await c.get("/metrics")
                out.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
            return out[1:]

    return {
        "collector": _times(collector, scrapes),
        "route": asyncio.run(route()),
        "bytes": len(body),
        "lines": sum(1 for line in body.splitlines() if not line.startswith(b"#")),
    }


def _row(name: str, got: dict) -> str:
    c, r = sorted(got["collector"]), sorted(got["route"])

    def p95(xs: list[float]) -> float:
        return xs[min(len(xs) - 1, int(0.95 * len(xs)))]

    return (
        f"{name:<11} {statistics.median(c):>9.1f} {p95(c):>7.1f} "
        f"{statistics.median(r):>11.1f} {p95(r):>7.1f} {got['lines']:>8} {got['bytes']:>8}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--scrapes", type=int, default=50)
    a = p.parse_args(argv)
    print(f"\nGET /metrics with {a.jobs} jobs ({a.scrapes} scrapes each; ms)")
    print(f"{'database':<11} {'collector':>9} {'p95':>7} {'GET /metrics':>11} {'p95':>7}"
          f" {'samples':>8} {'bytes':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scrape.db'}"
        t0 = time.perf_counter()
        record(url, a.jobs)
        made = time.perf_counter() - t0
        print(_row("SQLite", measure(url, a.scrapes, Path(tmp))))
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"colecionador_bench_metrics_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as e:  # noqa: BLE001 - no PostgreSQL here: SQLite's row alone
            print(f"PostgreSQL   skipped ({type(e).__name__})")
            return
        pg = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        try:
            record(pg, a.jobs)
            print(_row("PostgreSQL", measure(pg, a.scrapes, Path(tmp))))
        finally:
            from services.db.session import get_engine

            get_engine(pg).dispose()
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(f"(rows written in {made:.0f} s on SQLite)")


if __name__ == "__main__":
    main()
