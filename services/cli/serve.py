"""``colecionador serve``: the HTTP API (services/api/) on Ray Serve, and a predict
application per model (services/registry/serving.py); prints the URL.

On the cluster at COLECIONADOR_RAY_ADDRESS, or a running local one (``ray start``): the
apps stay deployed after this command exits. With no cluster running, a local Ray is
started here and the command serves until Ctrl-C. A cluster of several nodes that would
use one node's defaults exits 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.cli.serve_args import add_serve_arguments, hard_cases_of
from services.config import Settings
from services.jobs.ray_jobs import EmbeddedOnCluster

INGRESS_NAMES = {
    "haproxy": "HAProxy (Ray's HAProxy ingress)",
    "proxy": "Serve's Python proxy",
    None: "unknown (Ray's state API did not answer, or Serve runs no HTTP proxy)",
}


def _scale(
    fixed: int, low: int, high: int | None, target: float | None
) -> dict[str, Any]:  # Serve's options: a fixed count, or its autoscaler between low and high
    from services.api.deployment import autoscaling

    if high is None:
        return {"num_replicas": fixed}
    return {"autoscaling_config": autoscaling(low, high, target_ongoing_requests=target)}


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    """The queue bounds given (None: services/api/deployment.py's defaults)."""
    given = (
        ("max_ongoing_requests", args.max_ongoing_requests),
        ("max_queued_requests", args.max_queued_requests),
        ("retry_after_s", args.retry_after),
    )
    return {k: v for k, v in given if v is not None}


def _models_to_serve(args: argparse.Namespace, settings: Settings) -> list[tuple[str, int | None]]:
    """--predict NAME[@VERSION] ..., or every model whose alias (production) is set."""
    if args.no_predict:
        return []
    if args.predict:
        named: list[tuple[str, int | None]] = args.predict
        return named
    from services.db import repo
    from services.db.session import prepare_database, session_factory

    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        return [
            (a.model_name, None) for a in repo.model_aliases(s) if a.alias == args.predict_alias
        ]


def _deploy_predict(
    args: argparse.Namespace, settings: Settings, model: str, version: int | None
) -> None:
    from services.registry.serving import deploy_model

    deploy_model(
        settings,
        model,
        alias=args.predict_alias,
        version=version,
        num_cpus=args.predict_num_cpus,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        reload_s=args.reload_s,
        torch_threads=args.torch_threads,
        hard_cases=args.hard_cases,
        **_scale(
            args.predict_replicas,
            args.predict_min_replicas,
            args.predict_max_replicas,
            args.max_batch_size,
        ),
    )


def _say_ingress(args: argparse.Namespace, runs: str | None, started_here: bool) -> None:
    """Which ingress answers, and a warning when --ingress asked for another one."""
    print(f"ingress: {INGRESS_NAMES[runs]}", flush=True)
    if not started_here and args.ingress != "auto" and runs not in (None, args.ingress):
        print(
            f"warning: --ingress {args.ingress} applies to a Ray this command starts; the "
            f"running cluster has {INGRESS_NAMES[runs]} (RAY_SERVE_ENABLE_HA_PROXY="
            f"{int(runs == 'proxy')} at `ray start` on every node changes it)",
            file=sys.stderr,
            flush=True,
        )


def _serve_until_interrupted(local: dict[str, str]) -> None:
    """Serve from this process (its own local Ray) until Ctrl-C or SIGTERM."""
    import signal

    from ray import serve

    from services.api import haproxy

    print("no Ray cluster was running: serving from this process until Ctrl-C", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # ends as Ctrl-C does
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    haproxy.discard(local)


def _start(
    args: argparse.Namespace, parser: argparse.ArgumentParser, settings: Settings
) -> tuple[str | None, bool, dict[str, str]]:
    """Ray (a local one when none runs) and Serve: the ingress chosen, whether Ray was
    started here, and that Ray's environment."""
    from ray import serve

    from services.api import haproxy
    from services.jobs.ray_jobs import connect_ray

    try:
        ingress = haproxy.choose(args.ingress)
    except ValueError as e:
        parser.error(str(e))
    local: dict[str, str] = {}  # the environment of a Ray started here

    def local_env() -> dict[str, str]:  # "proxy" also when the shell exported the switch
        local.update(haproxy.node_env() if ingress == "haproxy" else {haproxy.ENABLE: "0"})
        return local

    started_here = connect_ray(settings, start_local=True, local_env=local_env)
    serve.start(
        proxy_location=args.proxy_location, http_options={"host": args.host, "port": args.port}
    )
    return ingress, started_here, local


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ray import serve

    from services.api import api_application, haproxy

    settings = Settings()
    args.hard_cases = hard_cases_of(args, parser)  # before anything starts
    target = args.target_ongoing_requests
    scale = _scale(args.replicas, args.min_replicas, args.max_replicas, target)
    ingress, started_here, local = _start(args, parser, settings)
    try:
        application = api_application(settings, num_cpus=args.num_cpus, **_limits(args), **scale)
    except EmbeddedOnCluster as e:
        print(f"colecionador serve: {e}", file=sys.stderr)
        return 2
    serve.run(application, name=args.name, route_prefix=args.route_prefix)
    url = f"http://{args.host}:{args.port}{args.route_prefix.rstrip('/')}"
    print(f"colecionador API {args.name!r} at {url}/ (OpenAPI at {url}/docs)", flush=True)
    _say_ingress(args, ingress if started_here else haproxy.running(), started_here)
    for model, version in _models_to_serve(args, settings):
        _deploy_predict(args, settings, model, version)
        behind = f"v{version} (pinned)" if version else f"the version behind {args.predict_alias!r}"
        print(f"model {model}: POST {url}/models/{model}/predict answers with {behind}")
    if settings.api_token is None:
        print("writes are refused: set COLECIONADOR_API_TOKEN to allow POST", flush=True)
    if started_here:
        _serve_until_interrupted(local)
    return 0


def add_parsers(sub: Any) -> None:
    srv = sub.add_parser(
        "serve", help="deploy the HTTP API and a predict application per model on Ray Serve"
    )
    add_serve_arguments(srv)
    srv.set_defaults(func=cmd_serve)
