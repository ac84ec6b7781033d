"""Bulk predictions (mode predict): images/s of the Ray Data path against a bare torch loop
on the same CPUs, and against the HTTP predict path.

Like for like: the same model.pt (ResNet18 at 32 px, 10 classes, random weights, which cost
what trained ones do: benchmarks/predict_latency.make_model), the same images (scikit-learn's
1,797 digits as PNG files, listed ``--repeat`` times), the same decode (training.predict's),
the same batches (predict_step.BATCH_SIZE) and one torch thread per process.

- bare: one process, one thread: read, decode, predict, top-k, batch after batch; run
  before and after the others (this shared host drifts), the mean counted.
- bulk: services/jobs/predict_step.py's stream (map_batches over an actor pool of
  ``--actors`` actors of one CPU each, the model loaded once per actor) with its writes
  (parquet + CSV on the driver), on a local Ray of as many CPUs. ``wall`` counts from
  the start of the execution (actor start-up and model loading included); ``steady``
  from its first output batch to its last.
- HTTP: POST /models/{name}/predict (the API app and ``--actors`` replicas of the
  model's predict application on Ray Serve) with 16 base64 images a request, 4 requests
  in flight, for the same number of images.

Printed: images/s of each, then the ratios: bulk per core / bare (goal >= 0.9), bulk /
HTTP. ``python -m benchmarks.bulk_predict`` (part of ``make bench``).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.predict_latency import MODEL, make_model
from services.jobs.predict_step import BATCH_SIZE as BATCH


def bench_bare(package: dict[str, Any], folder: Path, listing: list) -> float:
    """Images/s of decode + predict + top-k in this process, one torch thread."""
    import numpy as np
    import torch

    from training.predict import BadImage, Predictor, decode_image, top_k

    torch.set_num_threads(1)
    predictor = Predictor.from_package(package)
    t0 = time.perf_counter()
    for s in range(0, len(listing), BATCH):
        images = []
        for name, _, _ in listing[s : s + BATCH]:
            try:
                images.append(decode_image((folder / name).read_bytes(), predictor.image_size))
            except BadImage:
                continue
        top_k(predictor.probs(np.stack(images)), predictor.classes, 5)
    return len(listing) / (time.perf_counter() - t0)


def bench_bulk(package_bytes: bytes, folder: Path, listing: list, actors: int) -> dict[str, float]:
    """Images/s of the Ray Data path with its writes, wall and steady."""
    from services.jobs.predict_step import prediction_stream, write_outputs
    from training.bulk_predict import ImageSource

    stream = prediction_stream(
        listing,
        ImageSource(root=str(folder)),
        package_bytes,
        k=5,
        use_gpu=False,
        actors=actors,
        model=(MODEL, 1),
    )
    first: list[tuple[float, int]] = []  # the first output batch: when, how many rows

    def on_batch(n: int) -> None:
        if not first:
            first.append((time.perf_counter(), n))

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        rows, _bad = write_outputs(stream, Path(out), 5, on_batch)
        t1 = time.perf_counter()
    assert rows == len(listing), (rows, len(listing))
    return {
        "wall": rows / (t1 - t0),
        "steady": (rows - first[0][1]) / max(1e-9, t1 - first[0][0]),
    }


def bench_http(settings: Any, folder: Path, listing: list, actors: int) -> float:
    """Images/s through POST /models/{name}/predict, 16 images a request, 4 in flight."""
    import asyncio

    import httpx

    from benchmarks.api_latency import local_serve, wait_up
    from services.api.haproxy import installed
    from services.registry.serving import deploy_model

    bodies = []
    for s in range(0, len(listing), 16):
        images = [
            base64.b64encode((folder / n).read_bytes()).decode() for n, _, _ in listing[s : s + 16]
        ]
        bodies.append({"images": images, "top_k": 5})
    with local_serve(settings, haproxy=installed()) as url:
        deploy_model(settings, MODEL, num_replicas=actors, torch_threads=1, max_batch_size=4)
        asyncio.run(wait_up(f"{url}/healthz"))
        with httpx.Client(base_url=url, timeout=120) as client:
            path = f"/models/{MODEL}/predict"
            assert client.post(path, json=bodies[0]).status_code == 200  # warm
            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda b: client.post(path, json=b).status_code, bodies))
            elapsed = time.perf_counter() - t0
    assert set(codes) == {200}, codes
    return len(listing) / elapsed


def _listing(folder: Path, repeat: int) -> list:
    from training.bulk_predict import list_folder

    return list_folder(folder) * repeat


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=3, help="times the 1,797 digits are listed")
    p.add_argument("--actors", type=int, default=2, help="actors (and Ray CPUs, replicas)")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP path")
    args = p.parse_args(argv)
    import ray
    import torch

    from services.demo import write_digits

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        settings, package, _png = make_model(Path(tmp), "resnet18", 32)
        folder = write_digits(Path(tmp), range(10))
        listing = _listing(folder, args.repeat)
        buf = io.BytesIO()
        torch.save(package, buf)
        before = bench_bare(package, folder, listing)
        ray.init(num_cpus=args.actors, include_dashboard=False, logging_level="ERROR")
        try:
            bulk = bench_bulk(buf.getvalue(), folder, listing, args.actors)
        finally:
            ray.shutdown()
        http = None if args.no_http else bench_http(settings, folder, listing, args.actors)
        bare = (before + bench_bare(package, folder, listing)) / 2  # the host drifts
    print(
        f"\nBulk predictions: resnet18 at 32 px, {len(listing)} PNG digits, batches of "
        f"{BATCH}, 1 torch thread a process; {os.cpu_count()} cores; load before: {load:.2f}"
    )
    print(f"  bare loop, 1 process          {bare:8.1f} images/s (mean of before and after)")
    print(f"  bulk, {args.actors} actors (wall)        {bulk['wall']:8.1f} images/s")
    print(f"  bulk, {args.actors} actors (steady)      {bulk['steady']:8.1f} images/s")
    if http is not None:
        print(f"  HTTP predict, {args.actors} replicas     {http:8.1f} images/s")
    per_core = {k: v / args.actors / bare for k, v in bulk.items()}
    print(
        f"  bulk per core / bare: wall {per_core['wall']:.2f}, steady {per_core['steady']:.2f} "
        "(goal >= 0.9)"
    )
    if http is not None:
        print(f"  bulk / HTTP: wall {bulk['wall'] / http:.2f}, steady {bulk['steady'] / http:.2f}")
    return {"bare": bare, **{f"bulk_{k}": v for k, v in bulk.items()}, "http": http or 0.0}


if __name__ == "__main__":
    main()
