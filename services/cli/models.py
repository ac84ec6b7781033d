"""``colecionador promote``: move a model's alias to a version, or set its promotion mode
(services/registry/promotion.py). Bad arguments exit 2; the move is recorded and
published as a ModelPromoted event."""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.args import positive_int
from services.config import Settings


def cmd_promote(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Move an alias to a version (a person's move: over a rejected version only with
    --reason), recorded and published as a ModelPromoted event; or set the model's
    promotion mode."""
    import getpass
    import re

    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from services.events import outbox
    from services.events.schemas import ALIAS_PATTERN
    from services.registry import promotion

    if not re.fullmatch(ALIAS_PATTERN, args.alias):
        parser.error(f"--alias must match {ALIAS_PATTERN}, not {args.alias!r}")
    settings = Settings()
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        if args.mode:
            repo.set_promotion_mode(s, args.model, args.mode)
            print(f"model {args.model}: promotion {args.mode}")
        if args.version is None:
            return 0
        try:
            event = promotion.promote(
                s,
                settings,
                args.model,
                args.version,
                args.alias,
                by=args.by or getpass.getuser(),
                reason=args.reason,
            )
        except promotion.PromotionError as e:
            s.rollback()
            parser.error(str(e))
        s.commit()
    if event.get("job_id") is not None:
        outbox.try_publish(settings, event["job_id"])
    was = f" (was v{event['from_version']})" if event["from_version"] else ""
    override = " over the gate's rejection" if event["overrode_gate"] else ""
    print(f"{args.model} {args.alias} -> v{args.version}{was}{override}")
    return 0


def add_parsers(sub: Any) -> None:
    pro = sub.add_parser("promote", help="move a model's alias (production, ...) to a version")
    pro.add_argument("model")
    pro.add_argument("version", type=positive_int, nargs="?")
    pro.add_argument("--alias", default="production")
    pro.add_argument("--reason", help="why (required over a version the gate rejected)")
    pro.add_argument("--by", help="who (default: the local user)")
    pro.add_argument(
        "--mode",
        choices=["auto", "manual"],
        help="also set the promotion mode: auto (approved versions become production) or manual",
    )
    pro.set_defaults(func=cmd_promote)
