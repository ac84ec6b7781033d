"""``colecionador demo``: the whole pipeline on scikit-learn's digits, then one round of
the loop (services/demo.py; docs/guide/demo.md). Exits 0 when the demo's model is
versioned and the loop's round succeeded."""

from __future__ import annotations

import argparse
from typing import Any

from services.config import Settings
from services.statuses import JobStatus


def cmd_demo(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from services.demo import run_demo

    _, outcome, loop = run_demo(Settings(), workers=args.workers)
    ok = (
        outcome.status == JobStatus.SUCCESS
        and loop is not None
        and loop.status == JobStatus.SUCCESS
    )
    return 0 if ok else 1


def add_parsers(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the whole pipeline on scikit-learn's digits")
    demo.add_argument("--workers", type=int, default=None, help="Ray Train workers (default 2)")
    demo.set_defaults(func=cmd_demo)
