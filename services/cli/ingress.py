"""``colecionador ingress``: the detached ingress actor (services/ingress/) on the Ray
cluster started, stopped (``--stop``) or asked for its counters (``--status``). A cluster
of several nodes that would use one node's defaults exits 2, and so does an actor whose
node lacks one of this process's secrets or has another one (the line says which)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from services.config import Settings
from services.jobs.ray_jobs import EmbeddedOnCluster
from services.replica_settings import SecretNotOnNode


def cmd_ingress(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    import ray

    from services import ingress
    from services.jobs.ray_jobs import connect_ray

    settings = Settings()
    connect_ray(settings)
    if args.stop:
        print(json.dumps(ingress.stop_ingress()))
        return 0
    if args.status:
        print(json.dumps(ray.get(ingress.get_ingress().status.remote())))
        return 0
    try:
        actor = ingress.start_ingress(settings, prefetch=args.prefetch)
    except (EmbeddedOnCluster, SecretNotOnNode) as e:
        print(f"colecionador ingress: {e}", file=sys.stderr)
        return 2
    print(
        f"ingress {ingress.ACTOR_NAME} consuming {settings.requests_queue}: "
        f"{json.dumps(ray.get(actor.status.remote()))}"
    )
    return 0


def add_parsers(sub: Any) -> None:
    ing = sub.add_parser("ingress", help="start the detached ingress actor on the Ray cluster")
    ing.add_argument("--prefetch", type=int, default=4, help="unacked messages at a time")
    ing.add_argument("--stop", action="store_true", help="stop and remove it")
    ing.add_argument("--status", action="store_true", help="print its counters")
    ing.set_defaults(func=cmd_ingress)
