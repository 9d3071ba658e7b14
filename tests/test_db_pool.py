"""Pinging pooled connections only after they sat idle (app/db_pool.py), on PostgreSQL."""
from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import create_engine, text

from app.db_pool import ping_when_idle
from app.extensions import db
from tests.conftest import database_url, make_test_app

pytestmark = pytest.mark.skipif(not database_url().startswith("postgresql"),
                                reason="a server that can drop a connection: PostgreSQL")


def _engine(idle_seconds: float):
    engine = create_engine(database_url(), pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_seconds)
    return engine


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pid: int) -> None:
    url = database_url().replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)


def test_an_idle_connection_the_server_dropped_is_replaced_at_checkout():
    engine = _engine(idle_seconds=0.2)
    try:
        pid = _backend_pid(engine)
        _terminate(pid)
        time.sleep(0.2)  # idle past the threshold: the checkout pings, fails, reconnects
        assert _backend_pid(engine) != pid
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(monkeypatch):
    engine = _engine(idle_seconds=0.3)
    pings: list[int] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))
    try:
        for _ in range(5):
            _backend_pid(engine)
        assert pings == []  # busy: no round trip spent on pings
        time.sleep(0.35)
        _backend_pid(engine)
        assert pings == [1]  # idle past the threshold: pinged once
    finally:
        engine.dispose()


def test_the_app_pings_idle_connections_instead_of_every_checkout():
    app = make_test_app(DB_PING_IDLE_SECONDS=0.2)
    with app.app_context():
        assert not db.engine.pool._pre_ping
        db.engine.dispose()
        pid = _backend_pid(db.engine)
        _terminate(pid)
        time.sleep(0.2)
        assert _backend_pid(db.engine) != pid
