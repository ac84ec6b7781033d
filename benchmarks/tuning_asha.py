"""ASHA vs the full grid: epochs spent and the config each picks, on the same search.

A small grid (phase1_lr x 3, one of them far too high) over scikit-learn's digits at
32 px, each config cross-validated on k stratified folds of train + val (tuning.search,
the same code a ``mode: tune`` job runs), searched twice on one local Ray: with ASHA
(grace period 1 by default, reduction factor 2) and with FIFO (every config to its last epoch).
Reported: the epochs each search trained (config-epochs, and fold-epochs = x k folds),
wall time, the ranked configs, and whether both picked the same best config.

ASHA is asynchronous: the first config to reach a rung is recorded without comparison,
and with 2 trials at a time which of the first two gets there first depends on timing, so
two runs can stop different configs (a config that starts slow, as a higher lr may, can be
stopped at epoch 1 and the picks then differ). ``--grace-period 2`` trades epochs for that.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from training.data import split
from training.hyperparams import Hyperparameters
from tuning import report
from tuning.search import SearchResult, SearchRun, run_search
from tuning.spec import TuningSpec


def digits(size: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``per_class`` digits of each class, resized to ``size`` px, uint8 (N, 3, S, S)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(d.target == c))[:per_class] for c in range(10)]
        )
    )
    x = (d.images[keep] * (255 / 16)).astype(np.uint8)
    x = np.stack(
        [
            np.asarray(
                Image.fromarray(a).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            ).transpose(2, 0, 1)
            for a in x
        ]
    )
    return x, d.target[keep].astype(np.int64), [str(i) for i in range(10)]


def _warm_up_fn() -> None:
    import torchvision  # noqa: F401 - the first import from disk is the slow one


def search(
    scheduler: str,
    images,
    labels,
    classes,
    sp,
    hp: Hyperparameters,
    grid: dict[str, list[Any]],
    k: int,
    concurrent: int | None,
    grace: int = 1,
) -> SearchResult:
    spec = TuningSpec(
        grid=grid,
        k_folds=k,
        scheduler=scheduler,
        grace_period=grace,
        reduction_factor=2,
        max_concurrent=concurrent,
    )
    return run_search(
        images,
        labels,
        classes,
        sp,
        hp,
        spec,
        SearchRun(name=f"bench-{scheduler}-{int(time.time())}"),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--lrs",
        default="1e-3,1e-2,10",
        help="phase1_lr grid; keep the far-too-high one last (ASHA is "
        "asynchronous: the first config at a rung is never stopped)",
    )
    p.add_argument("--k-folds", type=int, default=3)
    p.add_argument("--per-class", type=int, default=30, help="digits per class")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--phase1-epochs", type=int, default=3)
    p.add_argument("--phase2-epochs", type=int, default=1)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--grace-period", type=int, default=1, help="ASHA's")
    args = p.parse_args(argv)

    hp = Hyperparameters(
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=16,
        phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs,
        phase2_lr=1e-4,
        unfreeze_last=10,
        min_per_class=5,
        hflip=False,
        rotation=10,
        shift=0.1,
        zoom=0.1,
    )
    grid = {"phase1_lr": [float(v) for v in args.lrs.split(",")]}
    images, labels, classes = digits(args.image_size, args.per_class)
    sp = split(labels, seed=hp.seed)

    import ray

    warm_up = ray.remote(num_cpus=1)(_warm_up_fn)
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=max(2, args.max_concurrent),
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    try:
        ray.get([warm_up.remote() for _ in range(2)])  # both searches start warm
        results = {
            s: search(
                s,
                images,
                labels,
                classes,
                sp,
                hp,
                grid,
                args.k_folds,
                args.max_concurrent,
                args.grace_period,
            )
            for s in ("asha", "fifo")
        }
    finally:
        if started:
            ray.shutdown()

    n_cv = len(sp.train) + len(sp.val)
    print(
        f"\nTuning with ASHA vs the full grid: {args.backbone} at {args.image_size} px, "
        f"digits {len(labels)} images ({n_cv} in {args.k_folds} folds, {len(sp.test)} test "
        f"held out), grid phase1_lr={args.lrs}, {hp.phase1_epochs}+{hp.phase2_epochs} "
        f"epochs, {args.max_concurrent} trials at a time, ASHA grace period "
        f"{args.grace_period}, reduction factor 2; {os.cpu_count()} cores"
    )
    rows = {}
    for name, res in results.items():
        ranked = report.rank(res.trials, res.spec.metric)
        win = report.best(ranked, res.spec.metric)
        rows[name] = {
            "epochs": res.epochs_run,
            "fold_epochs": res.fold_epochs_run,
            "wall_s": res.wall_s,
            "best": win.config if win else None,
            "best_val_loss": win.mean("val_loss") if win else None,
            "stopped": [c.config for c in ranked if c.status == "stopped_early"],
        }
        print(
            f"\n[{name}] {res.epochs_run} config-epochs, {res.fold_epochs_run} fold-epochs, "
            f"{res.wall_s:.1f} s"
        )
        print(report.table(ranked, res.spec.metric))
    full = len(report.rank(results["fifo"].trials)) * results["fifo"].max_t
    a, f = rows["asha"], rows["fifo"]
    same = a["best"] == f["best"]
    print(f"\n{'search':<8}{'config-epochs':>14}{'fold-epochs':>13}{'wall s':>9}  best config")
    for name in ("asha", "fifo"):
        r = rows[name]
        print(
            f"{name:<8}{r['epochs']:>14}{r['fold_epochs']:>13}{r['wall_s']:>9.1f}  "
            f"{report.config_text(r['best'] or {})}"
        )
    print(
        f"ASHA trained {a['epochs']} of the full grid's {f['epochs']} config-epochs "
        f"({a['epochs'] / max(f['epochs'], 1):.0%}; the grid's ceiling is {full}); "
        f"same best config: {'yes' if same else 'NO'}"
    )
    return {"rows": rows, "same_best": same, "full_grid_epochs": full}


if __name__ == "__main__":
    main()
