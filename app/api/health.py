"""Health: database, Redis and broker state; liveness and readiness probes.

``/health`` is the contract's summary. ``/health/live`` checks nothing but the process
(a liveness probe that restarts it must not fire because PostgreSQL is down), and
``/health/ready`` fails when anything this process needs to serve is missing, outbox lag
included (a load balancer takes it out of rotation). See deploy/monitoring.md.

``ok`` (200) when all are up; ``degraded`` (200) when Redis or the broker is down but the
database is up, since the API keeps working then (Redis is a cache and a transport);
``unavailable`` (503, with ``Retry-After``) when the database is down.
"""
from __future__ import annotations

from datetime import UTC

from flask import current_app, jsonify
from flask_smorest import Blueprint
from sqlalchemy import func, select, text

from app.errors import rollback_quietly
from app.extensions import db
from app.models import DomainEvent, utcnow
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


_STATE = {"type": "string"}
_LIVE_DOC = {"200": {"description": "The process answers", "content": {"application/json": {
    "schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}}
_READY_SCHEMA = {"type": "object", "properties": {
    "status": {"type": "string", "enum": ["ready", "not_ready"]},
    "checks": {"type": "object", "properties": {
        "database": _STATE, "redis": _STATE, "broker": _STATE, "outbox": _STATE}},
    "failed": {"type": "array", "items": _STATE},
    "outbox_lag_seconds": {"type": "number", "nullable": True}}}
_READY_DOC = {
    "200": {"description": "Ready to serve",
            "content": {"application/json": {"schema": _READY_SCHEMA}}},
    "503": {"description": "Not ready: ``failed`` names the checks (database, redis, broker, "
                           "outbox); ``Retry-After`` is set",
            "content": {"application/json": {"schema": _READY_SCHEMA}}},
}


@blp.route("/health/live")
@blp.doc(security=[], responses=_LIVE_DOC)
def live():
    """Liveness: the process answers (no dependency is checked; restart it if this fails)."""
    return jsonify({"status": "ok"}), 200


def _outbox_lag_seconds() -> float | None:
    """Age of the oldest undelivered event that has not failed yet (None: unreadable).

    An event waiting out a failure backoff is left out: one bad event must not take every
    web process out of rotation (the outbox-age alert reports it instead).
    """
    try:
        oldest = db.session.scalar(select(func.min(DomainEvent.created_at)).where(
            DomainEvent.delivered_at.is_(None), DomainEvent.last_error.is_(None)))
        db.session.rollback()
    except Exception:  # noqa: BLE001
        rollback_quietly()
        return None
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - oldest).total_seconds())


@blp.route("/health/ready")
@blp.doc(security=[], responses=_READY_DOC)
def ready():
    """Readiness: database, Redis and broker reachable, outbox not lagging (else 503)."""
    checks: dict = {"database": "ok" if _database_ok() else "unavailable"}
    checks["redis"] = _redis_state()
    checks["broker"] = _broker_state(checks["redis"])
    threshold = current_app.config.get("HEALTH_READY_OUTBOX_LAG_SECONDS", 0)
    lag = _outbox_lag_seconds() if checks["database"] == "ok" and threshold > 0 else None
    if threshold <= 0 or checks["database"] != "ok":
        checks["outbox"] = "not_checked"
    elif lag is None:
        checks["outbox"] = "unavailable"
    else:
        checks["outbox"] = "ok" if lag <= threshold else "lagging"
    failed = [name for name, state in checks.items()
              if state not in ("ok", "not_configured", "embedded", "not_checked")]
    body = {"status": "ready" if not failed else "not_ready", "checks": checks,
            "failed": failed, "outbox_lag_seconds": None if lag is None else round(lag, 3)}
    if not failed:
        return jsonify(body), 200
    retry_after = str(current_app.config.get("DB_RETRY_AFTER_SECONDS", 5))
    return jsonify(body), 503, {"Retry-After": retry_after}
