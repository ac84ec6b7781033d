"""read indexes: what the API's list and status queries filter and sort on (issue 18)

- ``ix_training_jobs_status_id`` (status, id): ``GET /jobs?status=...`` filters on the
  status and orders by id descending (a backward scan of the index, LIMIT rows read),
  and counts by status from the index alone.
- ``ix_model_versions_name_status_version`` (model_name, status, version): a model's
  latest approved version (``GET /models``, the status page). (model_name, version) is
  already indexed by its unique constraint.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_training_jobs_status_id', 'training_jobs', ['status', 'id'])
    op.create_index('ix_model_versions_name_status_version', 'model_versions',
                    ['model_name', 'status', 'version'])


def downgrade() -> None:
    op.drop_index('ix_model_versions_name_status_version', table_name='model_versions')
    op.drop_index('ix_training_jobs_status_id', table_name='training_jobs')
