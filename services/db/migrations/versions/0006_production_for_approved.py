"""production for the models that had approved versions before aliases existed

Migration 0005 introduced aliases but set none: every model versioned before it had no
``production``, so predict answered 503 for all of them until someone promoted. This sets
``production`` to each model's latest approved version where the model has no
``production`` yet and is not in manual promotion mode, with its audit row
(``moved_by: migration``). No ModelPromoted event: nothing moved that a consumer saw.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

REASON = "set by migration 0006: the latest approved version (aliases did not exist when it was made)"


def upgrade() -> None:
    conn = op.get_bind()
    latest = conn.execute(sa.text(
        "SELECT model_name, MAX(version) FROM model_versions WHERE status = 'approved' "
        "AND model_name NOT IN (SELECT model_name FROM model_aliases WHERE alias = 'production') "
        "AND model_name NOT IN (SELECT model_name FROM model_promotion WHERE mode = 'manual') "
        "GROUP BY model_name ORDER BY model_name"
    )).all()
    now = datetime.now(timezone.utc)
    for model_name, version in latest:
        conn.execute(
            sa.text(
                "INSERT INTO model_aliases (model_name, alias, version, moved_at, moved_by) "
                "VALUES (:m, 'production', :v, :t, 'migration')"
            ),
            {"m": model_name, "v": version, "t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO alias_moves (model_name, alias, from_version, to_version, "
                "moved_by, reason, overrode_gate, event_id, moved_at) VALUES "
                "(:m, 'production', NULL, :v, 'migration', :r, :f, NULL, :t)"
            ),
            {"m": model_name, "v": version, "r": REASON, "f": False, "t": now},
        )


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text(
        "DELETE FROM model_aliases WHERE alias = 'production' AND moved_by = 'migration'"
    ))
    conn.execute(sa.text("DELETE FROM alias_moves WHERE moved_by = 'migration'"))
