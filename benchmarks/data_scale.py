"""The data path at scale (issue #15), in one run, as ratios.

1. The job's data step (list, decode + resize to 224 px, split, health report) on N
   synthetic images for each N: the streamed path (Ray Data decode into shards in a local
   store, lazy images; settings.stream_min_images) against the in-memory path (4 decode
   threads, one uint8 array). Seconds, and the peak memory in use during the step by
   the benchmark's processes (its driver and its own Ray cluster: PeakMemory) above what
   they used before it. Then the same step again on the same data:
   the shards are reused (no JPEG decoded).
2. Training throughput, 2 Ray Train CPU workers, the same images and recipe: the
   streamed path (Ray Data, get_dataset_shard) against the in-memory path (the array
   through the object store), steady state (epochs after the first), images/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training import data as datasets
from training.health import health_report
from training.hyperparams import Hyperparameters


def write_images(root: Path, n: int, classes: int = 10, side: int = 64) -> Path:
    """n JPEGs in ImageFolder layout: smooth class-tinted noise, side x side."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (classes, 8, 8, 3), dtype=np.uint8)
    for i in range(n):
        c = i % classes
        small = np.clip(base[c].astype(np.int16) + rng.integers(-40, 40, (8, 8, 3)), 0, 255)
        img = Image.fromarray(small.astype(np.uint8)).resize((side, side))
        img.save(root / f"c{c}" / f"{i:06d}.jpg", quality=85)
    return root


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc: no psutil in the stack)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class PeakMemory:
    """Peak memory in use by this process and its Ray cluster (the driver and every
    process it started: raylet, object store, workers) while the block runs, above its
    start: the sum of PSS (shared pages such as the object store's counted once), sampled
    every 0.2 s. The host is shared, so the machine's total would measure the neighbours."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _used() -> int:
        return sum(_pss(pid) for pid in _process_tree(os.getpid()))

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._used())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def gb(self) -> float:
        return (self.peak - self.start) / 1e9


def data_step(folder: Path, hp: Hyperparameters, streamed: bool, home: Path) -> dict[str, Any]:
    from services.config import Settings
    from services.store.storage import LocalStore

    def run() -> int:
        index = datasets.discover(folder)
        if streamed:
            from services.jobs.decoded_cache import shard_set

            settings = Settings(home=home, stream_min_images=0)
            shards, _ = shard_set(index, hp.image_size, settings, LocalStore(home / "store"))
            decoded = shards.decoded(index.classes)
        else:
            decoded = datasets.decode(index, hp.image_size, "skip")
        split = datasets.split(decoded.labels, seed=0)
        health_report(decoded, split, near_distance=hp.near_duplicate_distance)
        return len(decoded)

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        n = run()
        seconds = time.perf_counter() - t0
    return {"n": n, "s": seconds, "peak_gb": mem.gb}


def throughput(folder: Path, home: Path, epochs: int, size: int) -> dict[str, dict[str, float]]:
    """2 Ray Train CPU workers on the same images and recipe, streamed first, then in
    memory, then streamed again (the machine's other load drifts: the mean of the two
    streamed runs is compared with the run between them). Per path: steady images/s
    (the median epoch after the first), the first epoch's seconds (Ray Data's start-up:
    its reader processes and split coordinator), and the share of training time spent
    waiting for a batch."""
    import ray

    from services.config import Settings
    from services.jobs.decoded_cache import shard_set
    from services.jobs.steps import PreparedData
    from services.store.storage import LocalStore
    from training.ray_worker import read_checkpoint
    from training.trainer import build_trainer

    hp = Hyperparameters(
        backbone="mobilenet_v3_small",
        image_size=size,
        batch_size=32,
        phase1_epochs=epochs,
        phase2_epochs=0,
        hflip=True,
    )
    index = datasets.discover(folder)
    settings = Settings(home=home, stream_min_images=0)
    shards, _ = shard_set(index, hp.image_size, settings, LocalStore(home / "store"))
    lazy = shards.decoded(index.classes)
    split = datasets.split(lazy.labels, seed=0)
    streamed = PreparedData(lazy, split, {}, shards)
    in_memory = PreparedData(
        datasets.DecodedDataset(np.asarray(lazy.images), lazy.labels, lazy.classes), split, {}
    )
    runs: dict[str, list[list[dict[str, Any]]]] = {"streamed": [], "in_memory": []}
    for name, prepared in (
        ("streamed", streamed),
        ("in_memory", in_memory),
        ("streamed", streamed),
    ):
        config = {
            "hyperparameters": hp.effective(),
            "data": ray.put(prepared.train_data()),
            "backbone_state": None,
        }
        trainer = build_trainer(
            config,
            num_workers=2,
            use_gpu=False,
            storage_path=str(home / "runs"),
            name=f"{name}-{time.time_ns()}",
            datasets=prepared.train_datasets(hp, workers=2),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            runs[name].append(read_checkpoint(Path(d))[0]["history"])
    out = {}
    for name, histories in runs.items():
        out[name] = {
            "img_s": float(
                np.mean([np.median([h["images_per_s"] for h in hs[1:]]) for hs in histories])
            ),
            "first_s": float(np.mean([hs[0]["epoch_time_s"] for hs in histories])),
            "wait": float(np.mean([h["data_wait"] for hs in histories for h in hs[1:]])),
        }
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_scale", description=__doc__)
    p.add_argument("--sizes", default="2000,8000,32000")
    p.add_argument("--in-memory-max", type=int, default=8000, help="larger N: streamed only")
    p.add_argument("--train-images", type=int, default=1000)
    p.add_argument("--train-size", type=int, default=224, help="image side for training")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    import ray

    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR", log_to_driver=False)
    hp = Hyperparameters(image_size=224)
    rows = []
    with tempfile.TemporaryDirectory(prefix="data-scale-") as tmp:
        tmp_path = Path(tmp)
        # Ray's worker processes start (and import torch) once: not a cost of the first N
        data_step(write_images(tmp_path / "warm", 40), hp, True, tmp_path / "warm-home")
        for n in [int(s) for s in args.sizes.split(",") if s]:
            folder = write_images(tmp_path / f"d{n}", n)
            home = tmp_path / f"home{n}"
            row = {"N": n, "streamed": data_step(folder, hp, True, home)}
            row["reused"] = data_step(folder, hp, True, home)
            if n <= args.in_memory_max:
                row["in_memory"] = data_step(folder, hp, False, home)
            rows.append(row)
            print(_row_line(row), flush=True)
        if rows:
            _print_data_steps(rows)
        if args.train_images:  # 0: the data step only
            folder = write_images(tmp_path / "train", args.train_images)
            tp = throughput(folder, tmp_path / "home-train", args.epochs, args.train_size)
            print(
                f"\ntraining, 2 CPU workers, {args.train_images} images at {args.train_size} px, "
                f"{args.epochs} epochs"
            )
            print(f"{'path':>10} {'img/s':>8} {'1st epoch s':>12} {'data wait':>10}")
            for name, r in tp.items():
                print(f"{name:>10} {r['img_s']:>8.1f} {r['first_s']:>12.1f} {r['wait']:>10.0%}")
            print(f"streamed / in memory: {tp['streamed']['img_s'] / tp['in_memory']['img_s']:.2f}")
    ray.shutdown()


def _print_data_steps(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print("\ndata step, 224 px (streamed: decode once into shards, lazy images)")
    print(
        f"{'N':>7} {'streamed s':>10} {'s/img ratio':>11} {'peak GB':>8} "
        f"{'reused s':>9} {'in-mem s':>9} {'in-mem GB':>9}"
    )
    for r in rows:
        s, m = r["streamed"], r.get("in_memory")
        ratio = (s["s"] / r["N"]) / (first["streamed"]["s"] / first["N"])
        print(
            f"{r['N']:>7} {s['s']:>10.1f} {ratio:>11.2f} {s['peak_gb']:>8.2f} "
            f"{r['reused']['s']:>9.1f} {m['s'] if m else float('nan'):>9.1f} "
            f"{m['peak_gb'] if m else float('nan'):>9.2f}"
        )


def _row_line(r: dict[str, Any]) -> str:
    return f"N={r['N']}: " + ", ".join(
        f"{k} {v['s']:.1f} s / {v['peak_gb']:.2f} GB" for k, v in r.items() if k != "N"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
