"""The ``colecionador up`` and ``colecionador down`` command lines.

Bad settings or options exit 2 with one line saying what to set, before anything is
touched; a thing that could not be made exits 1 (its line says why); else 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from services.cli.serve_args import HARD_CASE_FLAGS, up_options
from services.config import Settings
from services.errors import problem_words


def _say(line: Any) -> None:
    print(line, flush=True)


def _refuse(command: str, reason: str) -> int:
    print(f"colecionador {command}: {reason}", file=sys.stderr, flush=True)
    return 2


def _settings(command: str) -> tuple[Settings | None, int]:
    """The settings, or (None, 2) with the line that says which one to fix."""
    from services.deploy.up import bad_settings

    try:
        settings = Settings()
    except ValidationError as e:
        err = e.errors()[0]
        name = "COLECIONADOR_" + "_".join(str(p) for p in err["loc"]).upper()
        return None, _refuse(command, f"{name}: {problem_words(err)}: set it to a valid value")
    reason = bad_settings(settings)
    if reason is not None:
        return None, _refuse(command, reason)
    return settings, 0


def _connect(command: str, settings: Settings) -> int:
    """0 once connected to the cluster; 2 when no cluster is named and none runs here,
    1 when the named one cannot be reached."""
    from services.jobs.ray_jobs import connect_ray

    try:
        connect_ray(settings)
    except ConnectionError as e:
        if not settings.ray_address:
            return _refuse(
                command,
                "no Ray cluster runs on this machine: set COLECIONADOR_RAY_ADDRESS to the "
                "cluster's address (HEAD:6379), or run it on a node of the cluster",
            )
        print(f"colecionador {command}: cannot reach the Ray cluster: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Make the service exist on the cluster; a line per thing."""
    from services.deploy.up import exit_code, up

    options = up_options(args, parser)
    settings, code = _settings("up")
    if settings is None:
        return code
    code = _connect("up", settings)
    if code:
        return code
    from services.jobs.ray_jobs import EmbeddedOnCluster, refuse_embedded

    try:  # one node's defaults on a cluster of several: what to set, before anything
        refuse_embedded(settings, ("database", "store", "broker"))
    except EmbeddedOnCluster as e:
        return _refuse("up", str(e))
    return exit_code(up(settings, options, say=_say))


def cmd_down(_args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    """Remove what ``up`` made (the database and the store stay)."""
    from services.deploy.up import down, exit_code

    settings, code = _settings("down")
    if settings is None:
        return code
    code = _connect("down", settings)
    if code:
        return code
    return exit_code(down(say=_say))


# flag, type, help (defaults: UpOptions's, shown in --help)
FLAGS: list[tuple[str, type, str]] = [
    ("--host", str, "where Serve listens (0.0.0.0: every interface)"),
    ("--port", int, "Serve's HTTP port"),
    ("--proxy-location", str, "EveryNode, HeadOnly or Disabled"),
    ("--replicas", int, "the API's replicas"),
    ("--num-cpus", float, "CPUs reserved per API replica"),
    ("--prefetch", int, "the ingress's unacked messages"),
    ("--predict-alias", str, "the alias whose models get a predict application"),
    ("--predict-replicas", int, "replicas per model"),
    ("--predict-num-cpus", float, "CPUs reserved per model replica"),
    ("--max-batch-size", int, "requests per forward pass"),
    ("--batch-wait-ms", float, "how long a batch waits to fill"),
    ("--reload-s", float, "how often a model replica reads the alias"),
    ("--torch-threads", int, "torch threads per model replica"),
    ("--ingress-wait-s", float, "how long to wait for the ingress to consume"),
]
FLAGS += HARD_CASE_FLAGS


def add_parsers(sub: Any) -> None:
    """``up`` and ``down`` on the ``colecionador`` parser's subcommands."""
    from services.deploy.options import UpOptions

    up = sub.add_parser(
        "up",
        help="make the service exist on the Ray cluster: migrations, the ingress, the API "
        "and a predict application per model with the alias (idempotent)",
    )
    for flag, kind, text in FLAGS:
        default = UpOptions.model_fields[flag[2:].replace("-", "_")].default
        up.add_argument(flag, type=kind, default=None, help=f"{text} (default {default})")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser(
        "down",
        help="stop the ingress and delete the Serve applications `up` made (the database "
        "and the store stay)",
    )
    down.set_defaults(func=cmd_down)
