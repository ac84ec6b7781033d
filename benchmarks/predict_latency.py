"""Predictions: POST /models/{name}/predict on Ray Serve against the same model in a bare
loop, at fixed rates.

Like for like: the same model.pt (the demo's recipe shape: ResNet18 at 32 px, 10 digit
classes; random weights, which cost the same as trained ones), the same one image (a
scikit-learn digit as PNG, decoded and resized on every request), the same torch threads
(1). Served: the API app and the model's predict application (services/registry/serving.py,
``@serve.batch``) on a local 2-CPU Ray behind HAProxy when installed (the default
ingress, services/api/haproxy.py), an open-loop aiohttp client (benchmarks/api_latency.py:
request i is sent at t0 + i/rate and its latency counts from then; 1 s warm-up not
counted). Bare: one process, no HTTP, no Serve: decode + predict for each request at its
scheduled time, back to back, latency from the scheduled time too, so both sides queue
the same way when they fall behind.

Printed: predictions/s and p50/p99 per rate, then served / bare ratios (throughput, p50,
p99). 503: shed by the API deployment's backpressure (services/api/deployment.py) when
the predict application falls behind. ``python -m benchmarks.predict_latency`` (part of
``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.api_latency import local_serve, open_loop, wait_up

MODEL = "bench-digits"


def make_model(home: Path, backbone: str, image_size: int):
    """Settings on a temp home, model.pt stored as v1 of MODEL and promoted to production;
    returns (settings, the model.pt package, one PNG digit)."""
    from services.config import Settings

    settings = Settings(home=home, database_url=f"sqlite:///{home / 'bench.db'}")
    package = store_promoted(settings, MODEL, backbone, image_size)
    return settings, package, digit_png()


def store_promoted(settings: Any, model: str, backbone: str, image_size: int) -> dict[str, Any]:
    """An untrained ``backbone`` for the ten digits stored as v1 of ``model`` in the
    settings' store and database, promoted to production; returns the model.pt package."""
    import torch

    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from services.registry import promotion
    from services.store.artifacts import MODEL_FILE, version_prefix
    from services.store.storage import open_store
    from training.hyperparams import Hyperparameters
    from training.model import build_model, export_model

    prepare_database(settings)
    torch.manual_seed(0)
    hp = Hyperparameters(backbone=backbone, image_size=image_size)
    package = export_model(build_model(backbone, 10), hp, [str(d) for d in range(10)])
    buf = io.BytesIO()
    torch.save(package, buf)
    uri = open_store(settings).put_bytes(version_prefix(model, 1) + MODEL_FILE, buf.getvalue())
    with session_factory(settings.db_url)() as s:
        job, _ = repo.create_job(
            s, batch_id=f"bench-{model}", dataset_uri="x", model_name=model, hyperparameters={}
        )
        mv = repo.reserve_version(
            s,
            model,
            job_id=job.id,
            accuracy=1.0,
            precision=1.0,
            recall=1.0,
            f1=1.0,
            status="approved",
            gate={"status": "approved", "rules": []},
            model_path=uri,
        )
        promotion.auto_promote(s, settings, model, mv.version, job.id)
        s.commit()
    return package


def digit_png() -> bytes:
    """One of sklearn's digits as PNG bytes."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]
    png = io.BytesIO()
    Image.fromarray((digit * (255 / 16)).astype(np.uint8)).save(png, format="PNG")
    return png.getvalue()


def _summary(latencies: list[float], sent: int, elapsed: float) -> dict[str, Any]:
    latencies = sorted(latencies)
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(round(p / 100 * (n - 1))))] * 1000 if n else float("nan")

    return {
        "sent": sent,
        "requests": n,
        "shed": 0,
        "errors": 0,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(latencies) * 1000 if n else float("nan"),
        "achieved_rps": n / elapsed if elapsed > 0 else 0.0,
    }


def bench_bare(
    package: dict[str, Any], png: bytes, rates: list[float], duration: float, threads: int
) -> list[dict[str, Any]]:
    """Decode + predict one image per scheduled request, in this process."""
    import numpy as np
    import torch

    from training.predict import Predictor, decode_image

    torch.set_num_threads(threads)
    predictor = Predictor.from_package(package)
    out = []
    for rate in rates:
        total, first = int((1 + duration) * rate), int(rate)
        t0 = time.perf_counter() + 0.05
        latencies = []
        for i in range(total):
            at = t0 + i / rate
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            image = decode_image(png, predictor.image_size)
            predictor.predict(np.stack([image]), k=5)
            if i >= first:
                latencies.append(time.perf_counter() - at)
        elapsed = time.perf_counter() - (t0 + first / rate)
        out.append(_summary(latencies, total - first, elapsed))
    return out


def bench_serve(
    settings, png: bytes, rates: list[float], duration: float, threads: int, batch: int
) -> list[dict[str, Any]]:
    from services.api.haproxy import installed
    from services.registry.serving import deploy_model

    with local_serve(settings, haproxy=installed()) as url:  # the default ingress
        deploy_model(settings, MODEL, torch_threads=threads, max_batch_size=batch)
        asyncio.run(wait_up(f"{url}/healthz"))
        body = {"image": base64.b64encode(png).decode(), "top_k": 5}
        path = f"{url}/models/{MODEL}/predict"
        return [asyncio.run(open_loop(path, rate, duration, json_body=body)) for rate in rates]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rates", default="10,25,50", help="comma-separated predictions/s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds counted per rate")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    p.add_argument("--max-batch-size", type=int, default=16)
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        settings, package, png = make_model(Path(tmp), args.backbone, args.image_size)
        bare = bench_bare(package, png, rates, args.duration, args.threads)
        served = bench_serve(settings, png, rates, args.duration, args.threads, args.max_batch_size)
    for rate, r in zip(rates, bare):
        rows.append({"server": "bare loop (1 process)", "rate": rate, **r})
    for rate, r in zip(rates, served):
        rows.append({"server": "Ray Serve (API + predict app)", "rate": rate, **r})
    print(
        f"\nPredict latency: {args.backbone} at {args.image_size} px, one PNG digit per "
        f"request, {args.threads} torch thread(s), open loop for {args.duration:g} s per "
        f"rate after 1 s warm-up; {os.cpu_count()} cores; load average before: {load:.2f}"
    )
    print(
        f"{'server':<32}{'target/s':>9}{'sent':>6}{'ok':>6}{'503':>5}{'errors':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'pred/s':>8}"
    )
    for r in rows:
        print(
            f"{r['server']:<32}{r['rate']:>9g}{r['sent']:>6}{r['requests']:>6}{r['shed']:>5}"
            f"{r['errors']:>7}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['achieved_rps']:>8.1f}"
        )
    print("Serve / bare at the same rate:")
    for rate, b, s in zip(rates, bare, served):
        print(
            f"  {rate:>6g}/s: pred/s {s['achieved_rps'] / b['achieved_rps']:.2f}, "
            f"p50 {s['p50_ms'] / b['p50_ms']:.2f}x, p99 {s['p99_ms'] / b['p99_ms']:.2f}x"
        )
    return rows


if __name__ == "__main__":
    main()
