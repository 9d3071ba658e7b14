"""notifications: index (user_id, id) for the inbox's newest-first pages

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:45:00

The inbox lists a user's notifications by id, newest first (cursor pagination). Without an
index on (user_id, id), PostgreSQL walks the primary key backwards past every newer row of
every other user: 65 ms for the first page of a 100,000-row inbox under 400,000 newer rows
of others; about 2 ms with it (bench/notifications.py, serialisation included).
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_user_id_id', ['user_id', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_id_id')
