"""jobs: partial index on created_by over queued and running jobs (the per-user job cap)

Revision ID: 0003_job_queue_cap
Revises: 0003_sqlite_autoincrement
Create Date: 2026-11-30 19:10:00

``POST /jobs`` counts the user's queued + running jobs (at most MAX_QUEUED_JOBS_PER_USER).
Through ``ix_jobs_created_by`` that count read every job the user ever had (a heap fetch
each, to look at its status); this index holds only the active ones.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003_job_queue_cap'
down_revision = '0003_sqlite_autoincrement'
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_active_created_by', ['created_by'], unique=False,
                              postgresql_where=ACTIVE, sqlite_where=ACTIVE)


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_active_created_by')
