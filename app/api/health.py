"""Health: database, Redis and broker state.

``ok`` (200) when all are up; ``degraded`` (200) when Redis or the broker is down but the
database is up, since the API keeps working then (Redis is a cache and a transport);
``unavailable`` (503, with ``Retry-After``) when the database is down.
"""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint
from sqlalchemy import text

from app.errors import rollback_quietly
from app.extensions import db
from app.redis_client import get_redis

blp = Blueprint("health", __name__, description="Service health")


def _database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means the database is unavailable
        rollback_quietly()
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


def _broker_state(redis_state: str) -> str:
    celery = current_app.extensions.get("celery")
    if celery is None:
        return "not_configured"
    url = celery.conf.broker_url or ""
    if url.startswith("memory://"):
        return "embedded"
    if redis_state == "unavailable" and url == current_app.config.get("REDIS_URL"):
        return "unavailable"  # the same server: a stalled one would hold the probe for seconds
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=2)  # one try: a probe must not hang
        return "ok"
    except Exception:  # noqa: BLE001
        return "unavailable"


@blp.route("/health")
@blp.doc(security=[])
def health():
    """Report database, Redis and broker state (public)."""
    database = "ok" if _database_ok() else "unavailable"
    redis_state = _redis_state()
    broker = _broker_state(redis_state)
    healthy = database == "ok"
    degraded = "unavailable" in (redis_state, broker)
    status = "ok" if healthy and not degraded else ("degraded" if healthy else "unavailable")
    body = {"status": status, "database": database, "redis": redis_state, "broker": broker}
    if healthy:
        return jsonify(body), 200
    retry_after = str(current_app.config.get("DB_RETRY_AFTER_SECONDS", 5))
    return jsonify(body), 503, {"Retry-After": retry_after}
