"""GET /jobs latency: the API on Ray Serve against the same FastAPI app on bare uvicorn.

Like for like: the same ``services.api.create_app`` on the same SQLite database (a temp
home, a few recorded jobs), the same request (``GET /jobs?limit=20``, 20 rows back), sent
at a fixed rate over loopback by an open-loop httpx client: request i is sent at
t0 + i/rate whether or not the earlier ones have answered, and its latency counts from
that scheduled time, so a slow server cannot slow the client down and hide its queueing
(no coordinated omission). Each server runs in a process of its own (Serve: the proxy
and the replica actors; uvicorn: one child process running ``uvicorn.run`` on the app),
never in the client's process, where it would share the client's GIL. One second of
warm-up traffic is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(home: Path):
    from services.config import Settings
    return Settings(home=home, database_url=f"sqlite:///{home / 'bench.db'}",
                    api_token=None, api_read_token=None)


def record_jobs(settings, n: int) -> None:
    """``n`` jobs through the repository: queued, success (with 10 epochs) and failed."""
    from services.db import repo
    from services.db.session import session_factory
    from services.records import prepare_database
    from training.hyperparams import Hyperparameters
    prepare_database(settings)
    hp = Hyperparameters().effective()
    with session_factory(settings.db_url)() as s:
        for i in range(n):
            job, _ = repo.create_job(s, batch_id=f"bench-{i:04d}", dataset_uri=f"s3://d/{i}/",
                                     model_name="bench", total_images=9000,
                                     hyperparameters=hp, num_workers=2, use_gpu=False)
            if i % 3 == 1:
                for epoch in range(1, 11):
                    repo.record_epoch(s, job.id, epoch, {
                        "phase": 1 if epoch <= 5 else 2, "loss": 1 / epoch, "accuracy": 0.9,
                        "val_loss": 1.1 / epoch, "val_accuracy": 0.88, "lr": 1e-3,
                        "epoch_time_s": 12.5})
                repo.finish_job(s, job.id, "success", accuracy=0.93)
            elif i % 3 == 2:
                repo.finish_job(s, job.id, "failed", error="dataset: dataset not found")


async def wait_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


async def open_loop(url: str, rate: float, duration: float, warmup: float = 1.0
                    ) -> dict[str, Any]:
    """Send GET ``url`` at ``rate``/s for ``warmup + duration`` s; latencies of the
    requests scheduled after the warm-up, from their scheduled send time."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        total = int((warmup + duration) * rate)
        first_counted = int(warmup * rate)

        async def one(i: int, at: float) -> None:
            nonlocal errors
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.get(url)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if i >= first_counted:
                if ok:
                    latencies.append(loop.time() - at)
                else:
                    errors += 1

        tasks = [asyncio.create_task(one(i, t0 + i / rate)) for i in range(total)]
        start_counted = t0 + first_counted / rate
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start_counted
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(round(p / 100 * (n - 1))))] * 1000 if n else float("nan")
    return {"requests": n, "errors": errors, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "max_ms": latencies[-1] * 1000 if n else float("nan"),
            "mean_ms": statistics.fmean(latencies) * 1000 if n else float("nan"),
            "achieved_rps": n / elapsed if elapsed > 0 else 0.0}


def _uvicorn_child(home: str, port: int) -> None:
    import logging

    import uvicorn

    from services.api import create_app
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn.run(create_app(make_settings(Path(home))), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def bench_uvicorn(home: Path, path: str, rates: list[float], duration: float
                  ) -> list[dict[str, Any]] | None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    proc = mp.get_context("spawn").Process(target=_uvicorn_child, args=(str(home), port),
                                           daemon=True)
    proc.start()
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{port}/healthz"))
        return [asyncio.run(open_loop(f"http://127.0.0.1:{port}{path}", rate, duration))
                for rate in rates]
    finally:
        proc.terminate()
        proc.join(10)


def bench_serve(settings, path: str, rates: list[float], duration: float
                ) -> list[dict[str, Any]]:
    import ray
    from ray import serve

    from services.api import api_application
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(api_application(settings), name="bench", route_prefix="/")
        asyncio.run(wait_up(f"http://127.0.0.1:{port}/healthz"))
        return [asyncio.run(open_loop(f"http://127.0.0.1:{port}{path}", rate, duration))
                for rate in rates]
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rates", default="20,50",
                   help="comma-separated request rates (req/s), each run in turn")
    p.add_argument("--duration", type=float, default=10.0, help="seconds counted")
    p.add_argument("--jobs", type=int, default=30, help="jobs recorded in the database")
    p.add_argument("--limit", type=int, default=20, help="?limit= of GET /jobs")
    args = p.parse_args(argv)
    path = f"/jobs?limit={args.limit}"
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]  # other work on the machine shows in the tail latencies
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        home = Path(tmp)
        settings = make_settings(home)
        record_jobs(settings, args.jobs)
        bare = bench_uvicorn(home, path, rates, args.duration)
        for rate, r in zip(rates, bare or []):
            rows.append({"server": "FastAPI on uvicorn (1 process)", "rate": rate, **r})
        for rate, r in zip(rates, bench_serve(settings, path, rates, args.duration)):
            rows.append({"server": "FastAPI on Ray Serve (proxy + 1 replica)", "rate": rate,
                         **r})

    print(f"\nAPI latency: GET {path} ({args.limit} of {args.jobs} jobs, SQLite), open loop "
          f"for {args.duration:g} s per rate after 1 s of warm-up, loopback; {os.cpu_count()} "
          f"cores shared with the client; load average before: {load:.2f}")
    print(f"{'server':<42}{'target/s':>9}{'requests':>9}{'errors':>7}{'p50 ms':>9}"
          f"{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}")
    for r in rows:
        print(f"{r['server']:<42}{r['rate']:>9g}{r['requests']:>9}{r['errors']:>7}"
              f"{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}"
              f"{r['achieved_rps']:>8.1f}")
    print("(latency counts from each request's scheduled send time; errors: no 200 within "
          "30 s)")
    return rows


if __name__ == "__main__":
    main()
