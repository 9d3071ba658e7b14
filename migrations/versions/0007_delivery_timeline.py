"""delivery timeline: request ids on events, delivery steps, notification decisions

Revision ID: 0007_delivery_timeline
Revises: 0003_presence_ephemeral
Create Date: 2026-12-01 02:45:00

``domain_events.request_id``: the X-Request-ID of the request that recorded the event, so
the worker's log lines for it name the request (issue 16). ``delivery_steps`` and
``notification_decisions``: the admin delivery timeline, deleted with their events.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007_delivery_timeline'
down_revision = '0003_presence_ephemeral'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    with op.batch_alter_table('domain_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))

    op.create_table('delivery_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', JSON, nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['domain_events.id'],
                            name=op.f('fk_delivery_steps_event_id_domain_events'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_steps')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('delivery_steps', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_steps_event', ['event_id', 'id'], unique=False)

    op.create_table('notification_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('notification_id', sa.Integer(), nullable=True),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', JSON, nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['domain_events.id'],
                            name=op.f('fk_notification_decisions_event_id_domain_events'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_notification_decisions_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_decisions')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('notification_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_notification_decisions_event_user', ['event_id', 'user_id'],
                              unique=False)
        batch_op.create_index('ix_notification_decisions_notification', ['notification_id'],
                              unique=False)
        batch_op.create_index('ix_notification_decisions_at', ['at'], unique=False)


def downgrade():
    with op.batch_alter_table('notification_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_decisions_at')
        batch_op.drop_index('ix_notification_decisions_notification')
        batch_op.drop_index('ix_notification_decisions_event_user')
    op.drop_table('notification_decisions')
    with op.batch_alter_table('delivery_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_steps_event')
    op.drop_table('delivery_steps')
    with op.batch_alter_table('domain_events', schema=None) as batch_op:
        batch_op.drop_column('request_id')
