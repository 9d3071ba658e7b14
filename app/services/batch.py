"""A cache that lives for one delivery batch (rows every event of the batch would re-read).

Why not the session's identity map: it holds rows weakly, so a row nobody keeps (the
actor of an event, once its activity row is built) is gone by the next ``session.get``,
and each event of a batch paid a SELECT for the same episode and actor.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import select

from app.extensions import db

_KEY = "ec_batch_cache"
Row = TypeVar("Row")


def batch_cache() -> dict:
    """The current batch's cache; outside a batch, an empty dict nobody keeps (no caching)."""
    cache = db.session().info.get(_KEY)
    return cache if cache is not None else {}


def new_batch() -> None:
    """Start a batch: from here until ``end_batch``, rows read through the cache are kept."""
    db.session().info[_KEY] = {}


def end_batch() -> None:
    db.session().info.pop(_KEY, None)


def rows_by_id(model: type[Row], ids: Iterable[Any]) -> dict[int, Row | None]:
    """The batch's rows of ``model`` by id (None: no such row); missing ids in one query.

    The dict may hold more ids than asked for: every row loaded in this batch so far.
    """
    cache: dict[int, Row | None] = batch_cache().setdefault(("rows", model), {})
    wanted = {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}
    missing = sorted(wanted - cache.keys())
    if missing:
        found = {row.id: row for row in db.session.scalars(
            select(model).where(model.id.in_(missing)))}  # type: ignore[attr-defined]
        cache.update({i: found.get(i) for i in missing})
    return cache


def row_by_id(model: type[Row], row_id: Any) -> Row | None:
    """One row through the batch cache (``rows_by_id`` of one id)."""
    return rows_by_id(model, [row_id]).get(row_id)
