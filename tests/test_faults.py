"""Faults: Redis and PostgreSQL going away and coming back, a poison event.

Redis is a cache and a transport: with it down the API answers (no 5xx), revocations are
recorded in PostgreSQL, ``/health`` says ``degraded``. PostgreSQL down: 503
``database_unavailable`` with ``Retry-After``, then recovery without restarting anything.
The end-to-end tests restart throwaway servers (``tests/services.py``) under real
``python wsgi.py`` and Celery worker processes.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import RevokedToken
from app.redis_client import breaker_of, get_redis
from tests.conftest import make_test_app
from tests.helpers import wait_for
from tests.processes import free_port
from tests.services import have_redis_server, redis_server

needs_redis_server = pytest.mark.skipif(not have_redis_server(), reason="redis-server not installed")


def _dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_api_answers_while_redis_is_down(app, editor):
    down = make_test_app(REDIS_URL=_dead_redis_url())
    client = down.test_client()
    r = client.get("/api/v1/episodes", headers=editor.headers)
    assert r.status_code == 200, r.json
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "No cache", "episode_number": 1})
    assert r.status_code == 201, r.json
    with down.app_context():
        breaker = breaker_of(get_redis())
        assert breaker.down  # later calls fail at once instead of trying the network
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json["status"] == "degraded" and r.json["redis"] == "unavailable"
    assert r.json["database"] == "ok" and "broker" in r.json


def test_logout_while_redis_is_down_is_recorded_in_the_database(app, editor):
    down = make_test_app(REDIS_URL=_dead_redis_url())
    client = down.test_client()
    assert client.post("/api/v1/auth/logout", headers=editor.headers, json={}).status_code == 204
    with down.app_context():
        assert db.session.scalar(select(RevokedToken.jti)) is not None
    r = client.get("/api/v1/auth/me", headers=editor.headers)
    assert r.status_code == 401 and r.json["error"]["code"] == "token_revoked"


@pytest.mark.redis
@needs_redis_server
def test_revocation_made_while_redis_was_down_holds_when_it_returns(app, factory):
    user = factory.user("editor")
    with redis_server() as server:
        live = make_test_app(REDIS_URL=server.url)
        client = live.test_client()
        assert client.get("/api/v1/auth/me", headers=user.headers).status_code == 200
        assert server.client().exists("ec:blocklist:ready")  # Redis holds the whole blocklist
        server.kill()
        assert client.post("/api/v1/auth/logout", headers=user.headers, json={}).status_code == 204
        r = client.get("/api/v1/auth/me", headers=user.headers)
        assert r.status_code == 401 and r.json["error"]["code"] == "token_revoked"
        server.start()  # empty: no blocklist keys, no "ready" marker
        with live.app_context():
            jti = db.session.scalar(select(RevokedToken.jti))
        # The process writes the key it could not write, once Redis is back, by itself.
        wait_for(lambda: server.client().exists(f"ec:blocklist:{jti}"), 30,
                   what="the deferred blocklist write")
        r = client.get("/api/v1/auth/me", headers=user.headers)
        assert r.status_code == 401 and r.json["error"]["code"] == "token_revoked"


@pytest.mark.redis
@needs_redis_server
def test_revocation_missed_by_a_redis_that_kept_its_data_is_still_refused(app, factory):
    """Redis stalls (keys kept, "ready" marker kept) while a token is revoked."""
    user = factory.user("editor")
    with redis_server() as server:
        live = make_test_app(REDIS_URL=server.url, REDIS_SOCKET_TIMEOUT=0.2, REDIS_RETRY_SECONDS=0.5)
        client = live.test_client()
        assert client.get("/api/v1/auth/me", headers=user.headers).status_code == 200
        admin = server.client()
        assert admin.exists("ec:blocklist:ready")
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        assert client.post("/api/v1/auth/logout", headers=user.headers, json={}).status_code == 204
        r = client.get("/api/v1/auth/me", headers=user.headers)
        assert r.status_code == 401
        with live.app_context():
            jti = db.session.scalar(select(RevokedToken.jti))
        wait_for(lambda: admin.exists(f"ec:blocklist:{jti}"), 30, what="the deferred write")
        for _ in range(3):  # Redis answers again, with or without its marker: still refused
            r = client.get("/api/v1/auth/me", headers=user.headers)
            assert r.status_code == 401 and r.json["error"]["code"] == "token_revoked"


def test_revoke_twice_is_idempotent(app, editor):
    from app.auth import revoke_token

    with app.app_context():
        expires = datetime(2100, 1, 1, tzinfo=UTC)
        revoke_token("same-jti", expires)
        revoke_token("same-jti", expires)
        assert len(db.session.scalars(select(RevokedToken).filter_by(jti="same-jti")).all()) == 1


def _dead_database_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"  # refused


def test_database_down_is_503_with_retry_after_never_500(app, editor):
    down = make_test_app(SQLALCHEMY_DATABASE_URI=_dead_database_url(), REDIS_URL=None,
                         DB_RETRY_AFTER_SECONDS=7)
    client = down.test_client()
    for method, path, body in [("get", "/api/v1/episodes", None),
                               ("post", "/api/v1/episodes", {"title": "x", "episode_number": 1}),
                               ("post", "/api/v1/auth/login", {"email": "a@b.c", "password": "x"})]:
        r = getattr(client, method)(path, headers=editor.headers, json=body)
        assert r.status_code == 503, (path, r.status_code, r.json)
        assert r.headers["Retry-After"] == "7"
        assert r.json["error"]["code"] == "database_unavailable"
        assert r.json["error"]["details"] == {"retry_after": 7}
    r = client.get("/api/v1/health")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert r.json["status"] == "unavailable" and r.json["database"] == "unavailable"


def test_database_unavailable_tells_outages_from_bad_statements():
    import sqlite3

    from sqlalchemy.exc import IntegrityError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    from app.errors import database_unavailable

    class PgError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    def op(orig):
        return OperationalError("SELECT 1", {}, orig)

    assert database_unavailable(op(PgError(None)))  # refused / lost: no SQLSTATE
    assert database_unavailable(op(PgError("57P01")))  # admin shutdown
    assert database_unavailable(op(PgError("08006")))  # connection failure
    assert database_unavailable(op(PgError("53300")))  # too many connections
    assert not database_unavailable(op(PgError("42P01")))  # undefined table: a bug, a 500
    assert database_unavailable(PoolTimeoutError("pool exhausted"))
    assert not database_unavailable(IntegrityError("INSERT", {}, PgError("23505")))
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorname = "SQLITE_BUSY"
    assert database_unavailable(op(busy))
    missing = sqlite3.OperationalError("no such table: x")
    missing.sqlite_errorname = "SQLITE_ERROR"
    assert not database_unavailable(op(missing))


@pytest.mark.redis
@needs_redis_server
def test_a_stalled_redis_opens_the_breaker_then_one_caller_finds_it_back(app):
    import signal

    import redis

    from app.redis_client import make_client

    with redis_server() as server:
        client = make_client(server.url, connect_timeout=0.2, socket_timeout=0.2, retry_seconds=2)
        assert client.set("k", "v")
        breaker = breaker_of(client)
        server.proc.send_signal(signal.SIGSTOP)  # a hung host: connects, never answers
        try:
            with pytest.raises(redis.TimeoutError):
                client.get("k")  # the one call that pays the timeout
            assert breaker.down and breaker.is_open()
            with pytest.raises(redis.ConnectionError, match="circuit open"):
                client.get("k")  # no network at all while open
        finally:
            server.proc.send_signal(signal.SIGCONT)

        def answered() -> bool:
            try:
                return client.get("k") == "v"
            except redis.RedisError:
                return False

        wait_for(answered, 30, 0.1, "Redis to answer once the breaker lets a call through")
        assert not breaker.down


@pytest.mark.redis
@needs_redis_server
def test_events_left_in_the_outbox_are_woken_once_redis_returns(app, editor):
    """No later commit needed: the process that could not enqueue wakes a drainer itself."""
    from config import TestConfig

    with redis_server() as server:
        celery = TestConfig.celery() | {"broker_url": server.url, "task_always_eager": False}
        live = make_test_app(REDIS_URL=server.url, CELERY=celery)
        client = live.test_client()
        assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 200
        server.kill()
        r = client.post("/api/v1/episodes", headers=editor.headers,
                        json={"title": "While down", "episode_number": 1})
        assert r.status_code == 201
        server.start()  # empty: no drain flag, no queued task
        redis = server.client()
        # The drain flag is set and one drain task waits in the broker's events queue.
        wait_for(lambda: redis.exists("ec:delivery:draining") and redis.llen("events") == 1,
                   30, 0.1, "the wake-up once Redis is back")
