"""SQLite: AUTOINCREMENT on every integer id, so ids are never reused

Revision ID: 0003_sqlite_autoincrement
Revises: 0002
Create Date: 2026-11-30 19:00:00

Without AUTOINCREMENT SQLite hands out max(id) + 1: delete the newest episode, create
another, and it gets the same id, so the new episode showed the deleted one's activity
history, and old links, subscriptions and replayed events pointed at it. Each table is
rebuilt (batch mode, ``recreate="always"``) with ``sqlite_autoincrement``; rows and ids are
copied as they are. ``sqlite_sequence`` starts from the largest id present, so ids already
lost to a delete at the top may still come back once; none after this migration.
PostgreSQL's identity sequences never reuse ids: nothing to do there.

The rebuild drops each old table; with foreign keys on, that would delete (cascade) or
null the rows that refer to it. ``migrations/env.py`` turns them off on SQLite for the
migration run and runs ``PRAGMA foreign_key_check`` after it; this migration refuses to run
with them on.
"""
from alembic import op

revision = '0003_sqlite_autoincrement'
down_revision = '0002'
branch_labels = None
depends_on = None

# Parents before children (the order does not matter with foreign keys off, but reads well).
TABLES = ('users', 'revoked_tokens', 'episodes', 'domain_events', 'notification_preferences',
          'jobs', 'files', 'activity_logs', 'notifications')


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    if bind.exec_driver_sql('PRAGMA foreign_keys').scalar():
        raise RuntimeError('Rebuilding SQLite tables with foreign keys on would cascade '
                           'deletes; run through flask db upgrade (migrations/env.py)')
    for name in TABLES:
        with op.batch_alter_table(name, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade():
    _rebuild(True)


def downgrade():
    _rebuild(False)
