"""Fixtures: one schema per run built by the real migrations, clean tables per test.

SQLite by default; ``DATABASE_URL``/``REDIS_URL`` run the same tests on PostgreSQL + Redis.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from flask_jwt_extended import create_access_token, create_refresh_token
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app
from app.extensions import db
from app.models import User
from config import TestConfig
from workers import register_tasks

RUN_DIR = Path(tempfile.mkdtemp(prefix="ec-tests-"))


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{RUN_DIR / 'test.db'}"
    return url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1)


class _Config(TestConfig):
    SQLALCHEMY_DATABASE_URI = _database_url()
    REDIS_URL = os.environ.get("REDIS_URL") or None
    STORAGE_DIR = str(RUN_DIR / "files")
    MAX_CONTENT_LENGTH = 1024 * 1024


def database_url() -> str:
    """The SQLAlchemy URL of this run's database (for subprocesses too)."""
    return _Config.SQLALCHEMY_DATABASE_URI


_apps: list = []


def make_test_app(**overrides):
    """An app on the run's database; its connection pool is closed after the test."""
    app = create_app(_Config, **overrides)
    register_tasks(app.extensions["celery"])
    _apps.append(app)
    return app


@pytest.fixture(autouse=True)
def _dispose_engines():
    """Close every pool a test opened (each app has its own engine; PostgreSQL has a cap)."""
    yield
    while _apps:
        app = _apps.pop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def pytest_configure(config):
    config.addinivalue_line("markers", "redis: needs a real Redis (REDIS_URL); skipped on SQLite-only runs")
    config.addinivalue_line("markers", "browser: drives headless Chromium (skipped without it unless "
                                       "EC_REQUIRE_BROWSER=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("REDIS_URL"):
        return
    if os.environ.get("EC_REQUIRE_SERVICES"):
        raise pytest.UsageError("EC_REQUIRE_SERVICES is set but REDIS_URL is not")
    skip = pytest.mark.skip(reason="needs REDIS_URL (runs in the PostgreSQL + Redis pass)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _schema():
    """Build the schema once per run with ``flask db upgrade`` (the real migrations)."""
    app = make_test_app()
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.session.commit()
        upgrade()
    return app


def _clean(app) -> None:
    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                db.session.execute(text(f"DELETE FROM {name}"))
            # AUTOINCREMENT counters, like PostgreSQL's RESTART IDENTITY above.
            db.session.execute(text("DELETE FROM sqlite_sequence"))
        db.session.commit()
        from app.redis_client import get_redis

        client = get_redis()
        if client is not None:
            # Only the app's own keys: Celery's queue bindings must survive for a running
            # worker (a flushed binding silently drops published tasks).
            for key in client.scan_iter("ec:*"):
                client.delete(key)


@pytest.fixture
def app(_schema):
    """A fresh app over clean tables."""
    app = make_test_app()
    _clean(app)
    yield app
    with app.app_context():
        db.session.remove()


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Flask CLI runner."""
    return app.test_cli_runner()


class Factory:
    """Rows and tokens for tests."""

    def __init__(self, app):
        self.app = app
        self._n = 0

    def user(self, role: str = "editor", name: str | None = None, password: str = "password123"):
        self._n += 1
        with self.app.app_context():
            user = User(email=f"user{self._n}-{role}@example.com", name=name or f"{role}{self._n}",
                        role=role)
            user.set_password(password)
            db.session.add(user)
            db.session.commit()
            return TestUser(user.id, user.email, user.name, role, password,
                            create_access_token(identity=user.id),
                            create_refresh_token(identity=user.id))


class TestUser:
    __test__ = False

    def __init__(self, id, email, name, role, password, token, refresh):
        self.id, self.email, self.name, self.role = id, email, name, role
        self.password, self.token, self.refresh = password, token, refresh

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def factory(app):
    """Make users (with tokens) and rows."""
    return Factory(app)


@pytest.fixture
def admin(factory):
    return factory.user("admin", name="Ada Admin")


@pytest.fixture
def editor(factory):
    return factory.user("editor", name="Eddie Editor")


@pytest.fixture
def viewer(factory):
    return factory.user("viewer", name="Vera Viewer")


@pytest.fixture
def episode(client, editor):
    """An episode created over the API by the editor."""
    response = client.post("/api/v1/episodes", headers=editor.headers,
                           json={"title": "Pilot", "episode_number": 1, "season": 1,
                                 "categories": ["drama"]})
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture(scope="module")
def worker(_schema):
    """A real ``celery -A celery_app worker`` (2 processes, Redis broker) for a test module."""
    from tests.processes import celery_worker

    with celery_worker(concurrency=2) as w:
        yield w


@pytest.fixture(scope="module")
def server(_schema):
    """A real ``python wsgi.py`` under eventlet (the production server) for a test module."""
    from tests.processes import web_server

    with web_server(async_mode="eventlet") as s:
        yield s
