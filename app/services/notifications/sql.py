"""SQL helpers every notifications module shares: id lists, typed literals, visibility, batches."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, any_, cast, delete, literal, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from app.extensions import db
from app.models import Notification
from app.models.base import insert_for_dialect
from app.services.transaction import atomic

CHUNK = 5000  # ids per IN (...) list on SQLite: well under its bind-parameter limit


MAX_ID = 2**31 - 1  # ids are 32-bit integer columns


def id_in(column: Any, ids: Sequence[int]) -> Iterator[ColumnElement[bool]]:
    """``column IN ids`` as few conditions as the database allows.

    PostgreSQL: one condition with the ids as ONE array parameter (``= ANY(:ids)``), which
    psycopg sends as-is; an expanded IN of 10,000 parameters costs more to build than to run.
    SQLite: IN lists of at most ``CHUNK`` ids (its bind-parameter limit).
    """
    ids = list(ids)
    if not ids:
        return
    if db.engine.dialect.name == "postgresql":
        yield column == any_(literal(ids, postgresql.ARRAY(Integer)))
        return
    for start in range(0, len(ids), CHUNK):
        yield column.in_(ids[start:start + CHUNK])


def typed(value: Any, type_: TypeEngine) -> ColumnElement:
    """A bound value in a SELECT list; PostgreSQL needs the cast to type a NULL."""
    if db.engine.dialect.name == "postgresql":
        return cast(literal(value, type_), type_)
    return literal(value, type_)


def due(now: datetime) -> ColumnElement[bool]:
    """Rows a user may see at ``now``: not scheduled for later, not expired."""
    return and_(or_(Notification.deliver_at.is_(None), Notification.deliver_at <= now),
                or_(Notification.expires_at.is_(None), Notification.expires_at > now))


def insert_rows(rows: list[dict]) -> list[tuple[int, int, int | None]]:
    """Insert rows, skipping any (user_id, event_id) already there; (id, user_id, event_id).

    For the few rows of a rule or an alert (a broadcast uses ``INSERT ... SELECT``): one
    executemany ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, sent as multi-row VALUES.
    """
    if not rows:
        return []
    table = Notification.__table__
    stmt = (insert_for_dialect(table)
            .on_conflict_do_nothing(index_elements=["user_id", "event_id"])
            .returning(table.c.id, table.c.user_id, table.c.event_id))
    return [(r.id, r.user_id, r.event_id) for r in db.session.execute(stmt, rows)]


def delete_in_batches(condition: ColumnElement[bool], batch: int) -> int:
    """Delete matching rows ``batch`` at a time, committing each: short locks, bounded WAL."""
    total = 0
    while True:
        with atomic():
            ids = list(db.session.scalars(select(Notification.id).where(condition)
                                          .order_by(Notification.id).limit(batch)))
            if ids:
                db.session.execute(delete(Notification).where(Notification.id.in_(ids))
                                   .execution_options(synchronize_session=False))
        if not ids:
            return total
        total += len(ids)
        if len(ids) < batch:
            return total
