"""model aliases and promotion (issue 16): aliases of a model's versions, the audit of
every move, and a per-model promotion mode

- ``model_aliases`` (model_name, alias) -> version, with who moved it last and when.
- ``alias_moves``: every move (who, when, why, from, to, overrode_gate, its event).
- ``model_promotion``: ``auto`` (no row) or ``manual`` per model.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_aliases',
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('alias', sa.String(length=50), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('moved_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('moved_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('model_name', 'alias')
    )
    op.create_table('alias_moves',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('alias', sa.String(length=50), nullable=False),
    sa.Column('from_version', sa.Integer(), nullable=True),
    sa.Column('to_version', sa.Integer(), nullable=False),
    sa.Column('moved_by', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('overrode_gate', sa.Boolean(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=True),
    sa.Column('moved_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alias_moves_model_id', 'alias_moves', ['model_name', 'id'])
    op.create_table('model_promotion',
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('model_name')
    )


def downgrade() -> None:
    op.drop_table('model_promotion')
    op.drop_index('ix_alias_moves_model_id', table_name='alias_moves')
    op.drop_table('alias_moves')
    op.drop_table('model_aliases')
