"""the MLflow outbox (issue 28): what a job writes to MLflow, staged with the row it
mirrors and sent in order per model, retried while the MLflow server is away

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mlflow_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('refused', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['training_jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_mlflow_outbox_job_id', 'mlflow_outbox', ['job_id'])
    op.create_index('ix_mlflow_outbox_pending', 'mlflow_outbox', ['sent_at', 'refused', 'id'])


def downgrade() -> None:
    op.drop_index('ix_mlflow_outbox_pending', table_name='mlflow_outbox')
    op.drop_index('ix_mlflow_outbox_job_id', table_name='mlflow_outbox')
    op.drop_table('mlflow_outbox')
