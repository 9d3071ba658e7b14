"""Pessimistic disconnect handling that costs nothing on a busy pool.

``pool_pre_ping`` pings on every checkout: one extra round trip per transaction, a fifth
of the statements of a job's whole path. A connection that was used a moment ago is as
good as known alive, and a dead one among those is still caught (SQLAlchemy invalidates
the pool on the first disconnect error it sees). So only a connection that sat idle in
the pool for ``idle_seconds`` or more (a database restart, a firewall dropping quiet
connections) is pinged at checkout; a failed ping raises ``DisconnectionError``, and the
pool replaces the connection and tries again (SQLAlchemy's documented pattern).
"""
from __future__ import annotations

import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

_CHECKED_IN = "ec_checked_in"


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a connection at checkout only if it was idle ``idle_seconds`` or longer."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - any failure: replace the connection
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("idle connection failed its ping")
