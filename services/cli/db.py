"""``colecionador db upgrade [REVISION]``: apply the Alembic migrations
(services/db/migrations/) to COLECIONADOR_DATABASE_URL."""

from __future__ import annotations

import argparse
from typing import Any

from services.config import Settings


def cmd_db(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from services.db.session import upgrade

    settings = Settings()
    upgrade(settings.db_url, args.revision)
    print(f"database at {args.revision}: {settings.db_url.split('@')[-1]}")
    return 0


def add_parsers(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply the Alembic migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db)
