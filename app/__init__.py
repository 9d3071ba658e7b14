"""Episode Control: the application factory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.routing import IntegerConverter

from config import Config, config_from_env

MAX_ID = 2**31 - 1


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to the database's integer range."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002 - werkzeug's signature
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def create_app(config: type[Config] | None = None, **overrides: Any) -> Flask:
    """Build the app: bind extensions, blueprints, Socket.IO handlers, Celery, CLI."""
    config = config or config_from_env()
    if hasattr(config, "validate"):
        config.validate()
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent.parent / "instance"))
    app.config.from_object(config)
    app.config["CELERY"] = config.celery()
    app.config.update(overrides)
    # Ids are 32-bit integers in the database: a larger id in a URL is simply not found
    # (404 from routing), never an overflow error from the database.
    app.url_map.converters["int"] = BoundedIntConverter
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    # Imported here, not at the top: importing any ``app.x`` first runs this package, and
    # these modules import ``app.x`` modules themselves (the composition root comes last).
    from app import logs

    logs.configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    from app import models  # noqa: F401 - register every table on the metadata
    from app.api import register_blueprints
    from app.auth import init_auth
    from app.cli import register_cli
    from app.console import init_console
    from app.errors import register_error_handlers
    from app.extensions import api, db, jwt, migrate
    from app.limits import init_limits
    from app.metrics import init_metrics
    from app.realtime import init_realtime
    from app.security import init_edge
    from app.tasks import celery_init_app
    from app.ws_compression import install_ws_compression

    init_metrics(app)  # first: its timer starts before every other hook (it reads no body)
    init_limits(app)  # the body cap runs before any hook that reads a body
    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        from app.db_pool import ping_when_idle  # PostgreSQL only (see above)

        with app.app_context():
            ping_when_idle(db.engine, app.config["DB_PING_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True, compare_type=True)
    jwt.init_app(app)
    init_auth(app)
    api.init_app(app)
    logs.init_request_ids(app)  # before the blueprints' hooks: they may log
    register_blueprints(app)
    init_console(app)
    register_error_handlers(app)  # after flask-smorest, so our handlers win
    init_realtime(app)
    install_ws_compression(app)  # after Socket.IO: it must see the handshake first
    init_edge(app)  # after Socket.IO: CORS, security headers, trusted proxies wrap it all
    celery_init_app(app)
    register_cli(app)
    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: enforce foreign keys (cascades), WAL and a busy timeout for the worker threads."""
    module = type(dbapi_connection).__module__
    if "sqlite" not in module:
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
