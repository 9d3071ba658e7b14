"""presence: sockets leave the database; user_presence keeps only what must last

Revision ID: 0003_presence_ephemeral
Revises: 0003_sessions
Create Date: 2026-11-30 19:10:00

Sockets, viewers and the shown status change on every connect, join and heartbeat; they
now live in the presence store (Redis, or process memory on the embedded default) with a
TTL, not in ``presence_sockets`` rows with a lock per join (issue 12). ``user_presence``
keeps the chosen status, message and last activity; its ``status`` column (the shown
status) is derived from the store now.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_presence_ephemeral'
down_revision = '0003_sessions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('presence_sockets', schema=None) as batch_op:
        batch_op.drop_index('ix_presence_sockets_user')
        batch_op.drop_index('ix_presence_sockets_resource')
        batch_op.drop_index('ix_presence_sockets_heartbeat')
    op.drop_table('presence_sockets')
    with op.batch_alter_table('user_presence', schema=None) as batch_op:
        batch_op.drop_index('ix_user_presence_status')
        batch_op.drop_column('status')


def downgrade():
    with op.batch_alter_table('user_presence', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=20), nullable=False,
                                      server_default='offline'))
        batch_op.create_index('ix_user_presence_status', ['status'], unique=False)
    op.create_table('presence_sockets',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('namespace', sa.String(length=32), nullable=False),
    sa.Column('server_id', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=True),
    sa.Column('resource_id', sa.Integer(), nullable=True),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_presence_sockets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_presence_sockets'))
    )
    with op.batch_alter_table('presence_sockets', schema=None) as batch_op:
        batch_op.create_index('ix_presence_sockets_heartbeat', ['last_heartbeat_at'], unique=False)
        batch_op.create_index('ix_presence_sockets_resource', ['resource_type', 'resource_id'], unique=False)
        batch_op.create_index('ix_presence_sockets_user', ['user_id'], unique=False)
