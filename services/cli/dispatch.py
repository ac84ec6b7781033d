"""The ``colecionador`` parser: one subcommand group per module of services/cli/, each
registered by one line of ``COMMANDS`` (in the order ``--help`` lists them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli import compare, db, demo, ingress, jobs, models, predict, preflight, serve, up

# Each adds its subcommands to the parser's subparsers and sets func=cmd_... on each:
# func(args, parser) -> exit code. A new command group: a module here, and a line below.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    demo.add_parsers,  # demo
    jobs.add_parsers,  # train, tune, status, submit
    preflight.add_parsers,  # preflight
    ingress.add_parsers,  # ingress
    serve.add_parsers,  # serve
    up.add_parsers,  # up, down
    models.add_parsers,  # promote
    predict.add_parsers,  # predict
    db.add_parsers,  # db upgrade
    compare.add_parsers,  # compare
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colecionador", description="Train, tune, judge and version image classifiers on Ray."
    )
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    code: int = args.func(args, parser)
    return code
