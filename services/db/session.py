"""Engine and session factory; schema upgrades through Alembic only (``prepare_database``:
once per process and database, under the migrations' advisory lock)."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:  # the Train controller writes too
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The schema's Alembic revision (None: an empty database)."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def prepare_database(settings: Settings) -> None:
    """Bring the schema to head once per process and database (Alembic's context is
    module-global, so concurrent upgrades in threads would trample each other)."""
    if not settings.auto_migrate or settings.db_url in _migrated:
        return
    with _migrate_lock:
        if settings.db_url not in _migrated:
            upgrade(settings.db_url)
            _migrated.add(settings.db_url)
