"""model_versions.dataset_fingerprint: the data set a version was trained on (lineage)

The fingerprint is training.data.fingerprint of the listing the job trained on (each
file's relative path, class and content stamp, in order, the image size and the decoder's
version): GET /models/{name}/versions/{v}/lineage answers "trained on what" with it.
Versions made before this migration keep NULL: their listing was not recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions') as batch:
        batch.add_column(sa.Column('dataset_fingerprint', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions') as batch:
        batch.drop_column('dataset_fingerprint')
