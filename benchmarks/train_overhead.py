"""Ray Train loop vs a bare PyTorch DDP loop doing the same work, in one run.

Same code (training.loop.TwoPhaseRun), data (scikit-learn digits at 32 px), model, batch
size, epochs and a checkpoint written every epoch; like with like: 2 processes x 1 thread
each (torch.distributed gloo) against 2 Ray Train workers x 1 CPU. Reported: steady-state
training throughput (epochs after the first), and wall time from start to the end of the
last epoch including start-up (Ray's worker group start-up is part of its cost).

A shared 2-core host drifts by 10-20 % between minutes, more than the gap being measured, so
with --repeats the two loops run in pairs whose order alternates (bare then Ray, Ray then
bare, ...) and the figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.data import split
from training.hyperparams import Hyperparameters
from training.loop import TrainData, TwoPhaseRun, WorkerInfo
from training.ray_worker import Session, read_checkpoint, run_to_end


def digits(size: int) -> TrainData:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255 / 16)).astype(np.uint8)
    x = np.stack(
        [
            np.asarray(
                Image.fromarray(a).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            ).transpose(2, 0, 1)
            for a in x
        ]
    )
    s = split(d.target, seed=0)
    return TrainData(x, d.target.astype(np.int64), s.train, s.val, [str(i) for i in range(10)])


class LocalCheckpoints(Session):
    """The bare loop's session: the same checkpoint files, written to a local folder."""

    def __init__(self, worker: WorkerInfo, root: Path):
        self._worker, self.root = worker, root

    def worker(self) -> WorkerInfo:
        return self._worker

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None, name: str) -> None:
        if checkpoint_dir and self._worker.rank == 0:
            target = self.root / name
            target.mkdir(parents=True, exist_ok=True)
            for f in Path(checkpoint_dir).iterdir():
                (target / f.name).write_bytes(f.read_bytes())
        if dist.is_initialized():
            dist.barrier()  # ray.train.report is a barrier too


def _bare_worker(rank: int, world: int, port: int, hp: dict, data: TrainData, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    worker = WorkerInfo(rank, world, torch.device("cpu"))
    run = TwoPhaseRun(Hyperparameters(**hp), data, worker=worker, quiet=True)
    run_to_end(run, LocalCheckpoints(worker, Path(out)))
    if rank == 0:
        torch.save({"history": run.history, "end": time.time()}, Path(out) / "result.pt")
    dist.destroy_process_group()


def bare(hp: dict, data: TrainData, workers: int) -> tuple[list[dict], float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        mp.spawn(_bare_worker, args=(workers, port, hp, data, out), nprocs=workers)
        res = torch.load(Path(out) / "result.pt", weights_only=False)
    return res["history"], res["end"] - t0


def ray_train(hp: dict, data: TrainData, workers: int) -> tuple[list[dict], float]:
    import ray

    from training.trainer import build_trainer

    with tempfile.TemporaryDirectory() as storage:
        ref = ray.put(data)
        trainer = build_trainer(
            {"hyperparameters": hp, "data": ref, "backbone_state": None},
            num_workers=workers,
            use_gpu=False,
            storage_path=storage,
            name="bench",
            max_failures=0,
        )
        t0 = time.time()
        result = trainer.fit()
        wall = time.time() - t0
        with result.checkpoint.as_directory() as d:
            state, _ = read_checkpoint(Path(d))
    return state["history"], wall


def summarize(history: list[dict], wall: float) -> dict[str, float]:
    steady = history[1:] or history
    return {
        "epochs": len(history),
        "img_s": float(np.mean([r["images_per_s"] for r in steady])),
        "epoch_s": float(np.mean([r["epoch_time_s"] for r in steady])),
        "wall_s": wall,
    }


def combine(workers: int, pairs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """One row per process count: the median figures of each loop and the median of the
    per-pair ratios (each pair ran back to back, so host drift cancels within it)."""

    def median(loop: str, key: str) -> float:
        return float(np.median([p[loop][key] for p in pairs]))

    ratios = [p["ray"]["img_s"] / p["bare"]["img_s"] for p in pairs]
    return {
        "workers": workers,
        "bare": {k: median("bare", k) for k in pairs[0]["bare"]},
        "ray": {k: median("ray", k) for k in pairs[0]["ray"]},
        "throughput_ratio": float(np.median(ratios)),
        "ratios": ratios,
        "wall_ratio": float(np.median([p["bare"]["wall_s"] / p["ray"]["wall_s"] for p in pairs])),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers", default="1,2", help="comma-separated process counts to compare (1 thread each)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="pairs per process count, in alternating order; median ratio reported",
    )
    args = p.parse_args(argv)
    hp = Hyperparameters(
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        phase1_epochs=0,
        phase2_epochs=args.epochs,
        phase2_lr=1e-3,
        unfreeze_last=10_000,
        early_stopping_patience=args.epochs,
        hflip=False,
    ).effective()
    data = digits(args.image_size)
    counts = [int(w) for w in args.workers.split(",")]

    import ray

    # with the dashboard, as in production: without it Train V2's PlacementGroupCleaner
    # polls a State API that is not there, in a loop that costs CPU on a small machine
    ray.init(
        num_cpus=max(counts), include_dashboard=True, logging_level="ERROR", log_to_driver=False
    )
    rows = []
    try:
        for n in counts:  # the cluster is up for both loops: its daemons weigh on both
            pairs = []
            for i in range(args.repeats):
                order = ("bare", "ray") if i % 2 == 0 else ("ray", "bare")
                run = {
                    name: summarize(*(bare if name == "bare" else ray_train)(hp, data, n))
                    for name in order
                }
                pairs.append(run)
            rows.append(combine(n, pairs))
    finally:
        ray.shutdown()

    print(
        f"\nTraining loop overhead: {args.backbone} at {args.image_size} px, batch "
        f"{args.batch_size}/worker, {len(data.train_idx)} train images, {args.epochs} epochs,"
        f" a checkpoint each epoch; {os.cpu_count()} cores, 1 thread per process; "
        f"median of {args.repeats} pair(s)"
    )
    print(f"{'processes':<10}{'loop':<26}{'img/s (steady)':>15}{'epoch s':>9}{'wall s':>8}")
    for row in rows:
        b, r = row["bare"], row["ray"]
        print(
            f"{row['workers']:<10}{'bare PyTorch (gloo DDP)':<26}{b['img_s']:>15.1f}"
            f"{b['epoch_s']:>9.2f}{b['wall_s']:>8.1f}"
        )
        print(
            f"{'':<10}{'Ray Train TorchTrainer':<26}{r['img_s']:>15.1f}"
            f"{r['epoch_s']:>9.2f}{r['wall_s']:>8.1f}"
        )
        print(
            f"{'':<10}{'Ray / bare':<26}{row['throughput_ratio']:>15.3f}"
            f"{b['epoch_s'] / r['epoch_s']:>9.3f}{row['wall_ratio']:>8.3f}"
        )
        if len(row["ratios"]) > 1:
            print(f"{'':<10}{'  per pair':<26}" + ", ".join(f"{x:.3f}" for x in row["ratios"]))
    print(
        "(target: steady throughput ratio >= 0.95; wall time includes Ray's worker-group start-up)"
    )
    return rows


if __name__ == "__main__":
    main()
