"""epoch throughput: images_per_s and data_wait on training_metrics (issue 28)

Every epoch already reports them (training/loop.py); the epoch rows now keep them, so
``/metrics`` can say how fast a running job trains and how long it waits for data.
Older rows have NULL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('training_metrics', schema=None) as batch_op:
        batch_op.add_column(sa.Column('images_per_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('data_wait', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('training_metrics', schema=None) as batch_op:
        batch_op.drop_column('data_wait')
        batch_op.drop_column('images_per_s')
