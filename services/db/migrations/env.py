"""Alembic environment: the URL comes from the caller (services/db/session.py)."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from services.db.models import Base

MIGRATION_LOCK = 0x636F6C6563  # "colec": the advisory lock every migrator takes first
config = context.config
url: str = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or ""
if not url:
    raise RuntimeError("no database URL: pass attributes['url'] or set sqlalchemy.url")


def run() -> None:
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=Base.metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=Base.metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if conn.dialect.name == "postgresql":
                # one migrator at a time: the others wait here, then find the schema at head
                # (the API's replicas, the ingress and every job driver migrate on start)
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


run()
