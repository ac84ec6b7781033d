"""What several commands' arguments share: the argument types (bad values exit 2 through
argparse) and the hyperparameters of ``--config FILE`` and ``--set KEY=VALUE``."""

from __future__ import annotations

import argparse
import re

from training.hyperparams import Hyperparameters, load_hyperparameters

SET_HELP = "a hyperparameter (repeatable); see docs/reference/hyperparameters.md for names"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def model_spec(text: str) -> tuple[str, int | None]:
    """NAME or NAME@VERSION."""
    m = re.fullmatch(r"([\w.\-]+)(?:@([1-9]\d*))?", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME@VERSION, not {text!r}")
    return m[1], int(m[2]) if m[2] else None


def hyperparameters(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Hyperparameters:
    """``--config`` and every ``--set``, checked; exit 2 naming the bad one."""
    try:
        return load_hyperparameters(args.config, args.set or [])
    except ValueError as e:
        parser.error(str(e))
