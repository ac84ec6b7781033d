"""TPE vs random vs grid: the best cross-validated score each finds on the same budget.

The searchers are the service's own (tuning.search.searcher: Tune's seeded
``BasicVariantGenerator`` for grid and random, ``OptunaSearch`` with Optuna's TPE for tpe)
over the same space (phase1_lr and weight_decay, both log-uniform), each trial k-fold
cross-validated with one report per epoch, on one local Ray. The objective is cheap on
purpose (a scikit-learn MLP on the 8x8 digits, ``partial_fit`` one epoch at a time, k
stratified folds in lockstep) so that random and TPE can be run over several seeds: the
grid is one run; random and TPE are the mean (and worst) over seeds.

Same budget: FIFO (every config to its last epoch), ``--configs`` configs each: the grid
is sqrt(configs) log-spaced values per key across the same ranges, so every strategy
trains exactly configs x epochs config-epochs. Reported: the best mean val_loss over folds
(log loss) each strategy found, its val_accuracy, and the ratios of the best val_loss to
the grid's (below 1: better than the grid).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from tuning.search import searcher
from tuning.space import LogUniform, to_tune
from tuning.spec import TuningSpec

LR, WD = (1e-4, 1.0), (1e-6, 1.0)  # phase1_lr, weight_decay ranges


def mlp_trial(config: dict[str, Any], *, x, y, folds, epochs: int) -> None:
    """One config: an MLP per fold, one epoch of every fold per report (as tuning.cv)."""
    from ray import tune
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier

    classes = np.unique(y)
    models = [
        MLPClassifier(
            hidden_layer_sizes=(32,),
            learning_rate_init=config["phase1_lr"],
            alpha=config["weight_decay"],
            batch_size=32,
            random_state=i,
        )
        for i in range(len(folds))
    ]
    for epoch in range(1, epochs + 1):
        losses, accs = [], []
        for m, (tr, va) in zip(models, folds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.partial_fit(x[tr], y[tr], classes=classes)
            p = np.clip(m.predict_proba(x[va]), 1e-7, 1)
            loss = log_loss(y[va], p, labels=classes)
            losses.append(loss if math.isfinite(loss) else 50.0)
            accs.append(float((p.argmax(1) == y[va]).mean()))
        tune.report(
            {
                "epoch": epoch,
                "val_loss": float(np.mean(losses)),
                "val_accuracy": float(np.mean(accs)),
                "trial_done": epoch == epochs,
            }
        )


def spec_for(strategy: str, configs: int, max_concurrent: int) -> TuningSpec:
    if strategy == "grid":
        n = math.isqrt(configs)
        grid = {
            "phase1_lr": np.geomspace(*LR, n).tolist(),
            "weight_decay": np.geomspace(*WD, n).tolist(),
        }
        return TuningSpec(grid=grid, scheduler="fifo", max_concurrent=max_concurrent)
    space = {
        "phase1_lr": LogUniform(low=LR[0], high=LR[1]),
        "weight_decay": LogUniform(low=WD[0], high=WD[1]),
    }
    return TuningSpec(
        space=space,
        search=strategy,
        num_samples=configs,
        scheduler="fifo",
        max_concurrent=max_concurrent,
    )


def search(strategy: str, seed: int, data: dict[str, Any], args) -> dict[str, Any]:
    from ray import tune

    spec = spec_for(strategy, args.configs, args.max_concurrent)
    trainable = tune.with_parameters(mlp_trial, epochs=args.epochs, **data)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as storage:
        os.environ.update(RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1")
        t0 = time.perf_counter()
        results = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={
                k: to_tune(d, grid=spec.strategy == "grid") for k, d in spec.dimensions.items()
            },
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                num_samples=spec.num_samples,
                search_alg=searcher(spec, seed),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(name=f"{strategy}-{seed}", storage_path=storage, verbose=0),
        ).fit()
        wall = time.perf_counter() - t0
    rows = [r.metrics for r in results if r.metrics]
    best = min(rows, key=lambda m: m["val_loss"])
    return {
        "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"],
        "best_config": {k: best["config"][k] for k in ("phase1_lr", "weight_decay")},
        "configs": len(rows),
        "config_epochs": sum(m["training_iteration"] for m in rows),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", type=int, default=16, help="a square: the grid is n x n")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--k-folds", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3, help="runs of random and of TPE")
    p.add_argument("--max-concurrent", type=int, default=2)
    args = p.parse_args(argv)
    if math.isqrt(args.configs) ** 2 != args.configs:
        p.error("--configs must be a square (the grid is n x n)")

    from sklearn.datasets import load_digits

    from training.data import kfold

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    folds = kfold(y, np.arange(len(y)), args.k_folds, 0)
    data = {"x": x, "y": y, "folds": folds}

    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=max(2, args.max_concurrent),
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    try:
        runs = {"grid": [search("grid", 0, data, args)]}
        for strategy in ("random", "tpe"):
            runs[strategy] = [search(strategy, s, data, args) for s in range(args.seeds)]
    finally:
        if started:
            ray.shutdown()

    budget = args.configs * args.epochs
    print(
        f"\nSearch strategies on the same budget: {args.configs} configs x {args.epochs} "
        f"epochs = {budget} config-epochs each (FIFO), {args.k_folds}-fold CV, MLP(32) on "
        f"digits ({len(y)} images), space phase1_lr loguniform{LR} x weight_decay "
        f"loguniform{WD}; grid {math.isqrt(args.configs)} x {math.isqrt(args.configs)} "
        f"log-spaced; random and TPE over {args.seeds} seeds; {os.cpu_count()} cores"
    )
    grid = runs["grid"][0]["best_val_loss"]
    print(
        f"\n{'search':<8}{'best val_loss':>14}{'worst seed':>12}{'val_acc':>9}"
        f"{'vs grid':>9}{'config-epochs':>15}{'wall s':>8}"
    )
    out = {}
    for name, rs in runs.items():
        losses = [r["best_val_loss"] for r in rs]
        mean = statistics.fmean(losses)
        out[name] = {
            "mean_best_val_loss": mean,
            "worst_best_val_loss": max(losses),
            "mean_best_val_accuracy": statistics.fmean(r["best_val_accuracy"] for r in rs),
            "ratio_to_grid": mean / grid,
            "config_epochs": [r["config_epochs"] for r in rs],
            "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "best_configs": [r["best_config"] for r in rs],
        }
        o = out[name]
        print(
            f"{name:<8}{mean:>14.4f}{max(losses):>12.4f}{o['mean_best_val_accuracy']:>9.4f}"
            f"{o['ratio_to_grid']:>9.2f}{statistics.fmean(o['config_epochs']):>15.0f}"
            f"{o['wall_s']:>8.1f}"
        )
    t, r = out["tpe"]["mean_best_val_loss"], out["random"]["mean_best_val_loss"]
    print(f"TPE / random best val_loss: {t / r:.2f}; TPE / grid: {t / grid:.2f}")
    return out


if __name__ == "__main__":
    main()
