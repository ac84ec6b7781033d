"""The API's list read (GET /jobs?limit=20: 20 rows and the count, into the response
model) through the sync driver on a bounded thread pool, as the API runs it, against
SQLAlchemy's asyncio extension (aiosqlite on SQLite, asyncpg on PostgreSQL): calls per
second and CPU per call with 8 at once, in one process. Issue #18 asked which helps here
before committing to the bigger change.

aiosqlite, asyncpg and greenlet are not dependencies of the project (the API does not use
them); the async rows are skipped unless they are installed. PostgreSQL comes from
COLECIONADOR_TEST_PG_URL (default: the tests' server), in a database made and dropped here.

    python -m benchmarks.api_db_drivers [--calls 800]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from benchmarks.api_latency import make_settings, record_jobs

CONCURRENCY = 8
PG_ADMIN_URL = os.environ.get(
    "COLECIONADOR_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


async def _measure(call, calls: int) -> tuple[float, float]:
    async def worker(k: int) -> None:
        for _ in range(k):
            await call()

    await worker(20)  # warm: connections, statement caches
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)])
    return time.perf_counter() - wall, time.process_time() - cpu


async def sync_on_pool(url: str, calls: int) -> tuple[float, float]:
    from services.api import reads
    from services.db.session import session_factory

    sessions, pool = session_factory(url), ThreadPoolExecutor(CONCURRENCY)

    def page():
        with sessions() as s:
            return reads.job_page(s, None, 20, 0)

    loop = asyncio.get_running_loop()
    try:
        return await _measure(lambda: loop.run_in_executor(pool, page), calls)
    finally:
        pool.shutdown()


async def async_driver(url: str, calls: int) -> tuple[float, float]:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from services.api.schemas import Job, JobPage
    from services.db.models import TrainingJob

    engine = create_async_engine(url, **({} if "sqlite" in url else {"pool_size": CONCURRENCY}))
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def page():
        async with sessions() as s:
            jobs = (
                await s.scalars(select(TrainingJob).order_by(TrainingJob.id.desc()).limit(20))
            ).all()
            total = await s.scalar(select(func.count()).select_from(TrainingJob))
            return JobPage(
                items=[Job.model_validate(j) for j in jobs], total=total, limit=20, offset=0
            )

    try:
        return await _measure(page, calls)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=800)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    have_async = all(importlib.util.find_spec(m) for m in ("aiosqlite", "asyncpg", "greenlet"))
    rows: list[tuple[str, float, float]] = []
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"colecionador_drivers_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    pg = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        with tempfile.TemporaryDirectory(prefix="api-drivers-") as tmp:
            settings = make_settings(Path(tmp))
            record_jobs(settings, 30)
            record_jobs(settings.model_copy(update={"database_url": pg}), 30)
            runs = [
                ("SQLite, sync + 8 threads", sync_on_pool, settings.db_url),
                ("PostgreSQL, psycopg2 + 8 threads", sync_on_pool, pg),
            ]
            if have_async:
                runs[1:1] = [
                    (
                        "SQLite, aiosqlite (asyncio)",
                        async_driver,
                        settings.db_url.replace("sqlite://", "sqlite+aiosqlite://"),
                    )
                ]
                runs.append(
                    (
                        "PostgreSQL, asyncpg (asyncio)",
                        async_driver,
                        pg.replace("+psycopg2", "+asyncpg"),
                    )
                )
            for _ in range(args.rounds):
                for label, fn, url in runs:
                    wall, cpu = asyncio.run(fn(url, args.calls))
                    rows.append((label, args.calls / wall, 1000 * cpu / args.calls))
    finally:
        from services.db.session import get_engine

        get_engine(pg).dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(
        f"\nThe API's list read, {CONCURRENCY} at once, {args.calls} calls per row, "
        f"{args.rounds} rounds; load average before: {os.getloadavg()[0]:.2f}"
    )
    print(f"{'driver':<36}{'calls/s':>9}{'CPU ms/call':>13}")
    for label, rate, cpu in rows:
        print(f"{label:<36}{rate:>9.0f}{cpu:>13.2f}")
    if not have_async:
        print("(aiosqlite, asyncpg and greenlet are not installed: async rows skipped)")
    return rows


if __name__ == "__main__":
    main()
