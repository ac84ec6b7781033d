"""The search options of ``colecionador tune``: what to search, how, and ASHA's settings
(docs/guide/tuning.md)."""

from __future__ import annotations

import argparse


def _what(tune: argparse.ArgumentParser) -> None:
    tune.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="values to search for one hyperparameter (repeatable); "
        "list values as JSON: milestones=[3,6],[5,10]",
    )
    tune.add_argument(
        "--space",
        action="append",
        metavar="KEY=RANGE",
        help="a range to sample for one hyperparameter (repeatable): "
        "loguniform:1e-4:1e-2, uniform:0:0.5, int:8:64, choice:adam,sgd, or v1,v2 (a list)",
    )
    tune.add_argument(
        "--search",
        choices=["grid", "random", "tpe"],
        default=None,
        help="grid: every combination of the lists; random: --num-samples configs drawn at "
        "random; tpe: Optuna's TPE picks them (default: grid for lists, tpe for ranges)",
    )


def _how(tune: argparse.ArgumentParser) -> None:
    tune.add_argument(
        "--k-folds",
        type=int,
        default=5,
        help="stratified folds of train + val per config (default 5)",
    )
    tune.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="configs to sample (random, tpe); 1 with lists: the whole grid",
    )
    tune.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at a time (default: as many as the cluster fits)",
    )
    tune.add_argument(
        "--metric",
        choices=["val_loss", "val_accuracy"],
        default="val_loss",
        help="what ASHA and the ranking use: the mean over folds",
    )


def _scheduler(tune: argparse.ArgumentParser) -> None:
    tune.add_argument(
        "--scheduler",
        choices=["asha", "fifo"],
        default="asha",
        help="asha stops weak configs early; fifo runs every one to the end",
    )
    tune.add_argument(
        "--grace-period", type=int, default=1, help="ASHA: epochs before a config can be stopped"
    )
    tune.add_argument(
        "--reduction-factor", type=float, default=2.0, help="ASHA: keep the best 1/F at each rung"
    )


def add_search_arguments(tune: argparse.ArgumentParser) -> None:
    for add in (_what, _how, _scheduler):
        add(tune)
