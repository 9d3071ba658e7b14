"""Delivering one domain event: the single place every side effect hangs off.

Steps, each idempotent on the event id so at-least-once delivery is safe:
1. the activity row (unique ``event_id``),
2. the notification rules (unique ``user_id, event_id``), see ``notifications``,
3. commit, then the Socket.IO emits to the event's rooms (clients de-duplicate by id),
4. mark the event delivered.
A failure leaves the event undelivered with a backoff; the beat sweep re-enqueues it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from app.extensions import db
from app.models import DomainEvent, utcnow
from app.realtime import emit
from app.services import activity

log = logging.getLogger(__name__)

# Steps that run inside the delivery transaction, in order: (name, function(event)).
# Later layers (notifications) register here; emits run after the commit.
IN_TRANSACTION_STEPS: list[tuple[str, Callable[[DomainEvent], object]]] = [
    ("activity", activity.log_from_event),
]
AFTER_COMMIT_STEPS: list[tuple[str, Callable[[DomainEvent], object]]] = [
    ("emit", emit.emit_domain_event),
]


def backoff_seconds(attempts: int) -> int:
    """Grace × 2^(attempts-1), capped at an hour."""
    grace = current_app.config["EVENT_REDELIVERY_GRACE_SECONDS"]
    return int(min(3600, grace * 2 ** max(0, attempts - 1)))


def deliver_event(event_id: int) -> bool:
    """Deliver one event; True when this call delivered it, False if already done or failed."""
    session = db.session
    query = select(DomainEvent).where(DomainEvent.id == event_id)
    if db.engine.dialect.name == "postgresql":
        # Two workers given the same event (redelivery overlap) take turns, not both.
        query = query.with_for_update()
    event = session.scalar(query)
    if event is None:
        session.rollback()
        log.warning("event %s not found", event_id)
        return False
    if event.delivered_at is not None:
        session.rollback()
        return False
    try:
        for _name, step in IN_TRANSACTION_STEPS:
            step(event)
        event.attempts += 1
        session.commit()
        for _name, step in AFTER_COMMIT_STEPS:
            step(event)
        session.execute(update(DomainEvent).where(DomainEvent.id == event_id)
                        .values(delivered_at=utcnow(), last_error=None))
        session.commit()
        return True
    except Exception as exc:  # noqa: BLE001 - recorded on the event, retried by the sweep
        session.rollback()
        record_failure(event_id, exc)
        return False


def record_failure(event_id: int, exc: BaseException) -> None:
    event = db.session.get(DomainEvent, event_id)
    if event is None:
        return
    event.attempts += 1
    event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    event.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(event.attempts))
    db.session.commit()
    log.error("delivery of event %s failed (attempt %s): %s", event_id, event.attempts, exc)


def redeliver_stale(*, limit: int = 1000) -> list[int]:
    """Re-enqueue events undelivered past the grace period, honouring each one's backoff.

    Events that keep failing raise an alert once (log, and the alert hooks).
    """
    from app.services.events import enqueue

    now = utcnow()
    grace = timedelta(seconds=current_app.config["EVENT_REDELIVERY_GRACE_SECONDS"])
    rows = list(db.session.scalars(
        select(DomainEvent)
        .where(DomainEvent.delivered_at.is_(None), DomainEvent.created_at <= now - grace)
        .where((DomainEvent.next_attempt_at.is_(None)) | (DomainEvent.next_attempt_at <= now))
        .order_by(DomainEvent.id)
        .limit(limit)
    ))
    threshold = current_app.config["EVENT_MAX_ATTEMPTS_BEFORE_ALERT"]
    alerts = []
    for event in rows:
        # Push the next try out so the next sweep does not enqueue it again while queued.
        event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts + 1))
        if event.attempts >= threshold and not event.alerted:
            event.alerted = True
            alerts.append((event.id, event.name, event.attempts, event.last_error))
    ids = [event.id for event in rows]
    db.session.commit()
    for alert in alerts:
        raise_alert(*alert)
    for event_id in ids:
        enqueue(event_id)
    return ids


ALERT_HOOKS: list[Callable[[str, dict], None]] = []


def raise_alert(event_id: int, name: str, attempts: int, error: str | None) -> None:
    """An event keeps failing: log it, and tell the hooks (admin notification, /admin emit)."""
    message = f"Event {event_id} ({name}) still undelivered after {attempts} attempts"
    log.error("%s: %s", message, error)
    for hook in ALERT_HOOKS:
        try:
            hook(message, {"event_id": event_id, "event": name, "attempts": attempts,
                           "error": error})
        except Exception:  # noqa: BLE001 - an alert hook failing must not stop the sweep
            log.exception("alert hook failed")
