"""Health: database, Redis and broker state; 503 when the database is down."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint
from sqlalchemy import text

from app.extensions import db
from app.redis_client import get_redis

blp = Blueprint("health", __name__, description="Service health")


def _database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means the database is unavailable
        db.session.rollback()
        return False


def _redis_state() -> str:
    client = get_redis()
    if client is None:
        return "not_configured"
    try:
        client.ping()
        return "ok"
    except Exception:  # noqa: BLE001
        return "unavailable"


def _broker_state() -> str:
    celery = current_app.extensions.get("celery")
    if celery is None:
        return "not_configured"
    url = celery.conf.broker_url or ""
    if url.startswith("memory://"):
        return "embedded"
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception:  # noqa: BLE001
        return "unavailable"


@blp.route("/health")
@blp.doc(security=[])
def health():
    """Report database, Redis and broker state (public)."""
    database = "ok" if _database_ok() else "unavailable"
    redis_state = _redis_state()
    broker = _broker_state()
    healthy = database == "ok"
    degraded = "unavailable" in (redis_state, broker)
    status = "ok" if healthy and not degraded else ("degraded" if healthy else "unavailable")
    body = {"status": status, "database": database, "redis": redis_state, "broker": broker}
    return jsonify(body), 200 if healthy else 503
