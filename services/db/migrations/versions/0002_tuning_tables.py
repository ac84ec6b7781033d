"""tuning tables: tuning_runs and tuning_trials (issue 5)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tuning_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('grid', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('base_hyperparameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('k_folds', sa.Integer(), nullable=False),
    sa.Column('num_samples', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=50), nullable=False),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('scheduler', sa.String(length=20), nullable=False),
    sa.Column('grace_period', sa.Integer(), nullable=True),
    sa.Column('reduction_factor', sa.Float(), nullable=True),
    sa.Column('max_t', sa.Integer(), nullable=True),
    sa.Column('max_concurrent', sa.Integer(), nullable=True),
    sa.Column('resources', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('folds', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('best_trial_index', sa.Integer(), nullable=True),
    sa.Column('best_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('epochs_run', sa.Integer(), nullable=True),
    sa.Column('fold_epochs_run', sa.Integer(), nullable=True),
    sa.Column('wall_s', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['training_jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tuning_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tuning_runs_job_id'), ['job_id'], unique=False)

    op.create_table('tuning_trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('trial_index', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.String(length=100), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('stopped_at', sa.Integer(), nullable=False),
    sa.Column('max_epochs', sa.Integer(), nullable=True),
    sa.Column('mean_val_loss', sa.Float(), nullable=True),
    sa.Column('std_val_loss', sa.Float(), nullable=True),
    sa.Column('mean_val_accuracy', sa.Float(), nullable=True),
    sa.Column('std_val_accuracy', sa.Float(), nullable=True),
    sa.Column('best_epoch', sa.Integer(), nullable=True),
    sa.Column('best_mean', sa.Float(), nullable=True),
    sa.Column('best_std', sa.Float(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('epochs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['tuning_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'trial_index', name='uq_tuning_trials_run_index')
    )
    with op.batch_alter_table('tuning_trials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tuning_trials_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tuning_trials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tuning_trials_run_id'))

    op.drop_table('tuning_trials')
    with op.batch_alter_table('tuning_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tuning_runs_job_id'))

    op.drop_table('tuning_runs')
