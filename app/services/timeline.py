"""The delivery timeline (issue 16): an event's path through delivery, and every
notification decision with its reason, for admins answering "why didn't I get this?".

Writes are cheap by design: the delivery code hands a whole batch's steps to
:func:`record_steps` (one executemany INSERT in the delivery transaction, so a rolled-back
batch leaves no steps behind), and every notification decision reaches
:func:`note_decisions` through the notifications package's choke point
(``decisions.note_many``: one INSERT per batch of decisions). ``DELIVERY_TIMELINE=0``
turns the recording off. The rows live as long as their
event: ``delivery.purge_delivered`` deletes them with it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import delete, insert, or_, select

from app.errors import NotFound
from app.extensions import db
from app.models import DomainEvent, Notification, User, isoformat, utcnow
from app.models.timeline import DeliveryStep, NotificationDecision


def step(event_id: int, name: str, at: datetime | None = None, **detail: object) -> dict:
    """One delivery step row (for :func:`record_steps`)."""
    return {"event_id": event_id, "step": name, "at": at or utcnow(), "detail": detail}


# Decisions noted while a delivery batch runs its in-transaction steps: the rules note per
# event; collected here, they go in with the batch's steps instead of one INSERT per event.
_collected: ContextVar[list[dict] | None] = ContextVar("ec_timeline_collected", default=None)


@contextmanager
def collecting() -> Iterator[list[dict]]:
    """Collect decisions noted in this block (the caller writes them with its steps)."""
    rows: list[dict] = []
    token = _collected.set(rows)
    try:
        yield rows
    finally:
        _collected.reset(token)


def record_steps(rows: list[dict], decisions: list[dict] | None = None) -> None:
    """Append a batch of delivery steps (and collected decisions): one statement each."""
    if not current_app.config.get("DELIVERY_TIMELINE", True):
        return
    _insert(DeliveryStep.__table__, rows)
    _insert(NotificationDecision.__table__, decisions or [])


def _insert(table, rows: list[dict]) -> None:
    """One Core executemany (measured: cheaper than the ORM's bulk path and than multi-row
    VALUES, whose compile per statement cost more than the round trips it saved)."""
    if rows:
        db.session.execute(insert(table), rows)


def note_decisions(notes: Iterable[Any]) -> None:
    """Append notification decisions in the current transaction: one statement per call.

    Called by the notifications package's one choke point (``decisions.note_many``) with
    its ``Note`` tuples (user_id, event_id, outcome, reason, details); a ``notification_id``
    in the details gets its own indexed column.
    """
    if not has_app_context() or not current_app.config.get("DELIVERY_TIMELINE", True):
        return  # (a rule evaluated in a unit test, outside any app: nothing to write to)
    now = utcnow()
    rows = [{"user_id": note.user_id, "event_id": note.event_id,
             "notification_id": (note.details or {}).get("notification_id"),
             "decision": note.outcome[:32], "reason": (note.reason or "")[:255], "at": now,
             "detail": note.details or {}} for note in notes]
    collected = _collected.get()
    if collected is not None:
        collected.extend(rows)
    else:
        _insert(NotificationDecision.__table__, rows)


def purge_for_events(event_ids: list[int]) -> None:
    """Delete the timeline of these events (the outbox purge calls it before deleting them)."""
    db.session.execute(delete(DeliveryStep).where(DeliveryStep.event_id.in_(event_ids)))
    db.session.execute(delete(NotificationDecision)
                       .where(NotificationDecision.event_id.in_(event_ids)))


def purge_unattached_before(cutoff: datetime) -> None:
    """Decisions with no event (direct sends, digests) go after the same retention period."""
    db.session.execute(delete(NotificationDecision).where(
        NotificationDecision.event_id.is_(None), NotificationDecision.at < cutoff))


# ---- reading -------------------------------------------------------------------------------


def _step_json(row: DeliveryStep) -> dict:
    return {"step": row.step, "at": isoformat(row.at), "detail": row.detail or {}}


def _decision_json(row: NotificationDecision) -> dict:
    return {"decision": row.decision, "reason": row.reason, "at": isoformat(row.at),
            "user_id": row.user_id, "event_id": row.event_id,
            "notification_id": row.notification_id, "detail": row.detail or {}}


def _event_json(event: DomainEvent) -> dict:
    return {"id": event.id, "name": event.name, "actor_id": event.actor_id,
            "resource_type": event.resource_type, "resource_id": event.resource_id,
            "request_id": event.request_id, "created_at": isoformat(event.created_at),
            "delivered_at": isoformat(event.delivered_at) if event.delivered_at else None,
            "attempts": event.attempts, "last_error": event.last_error,
            "next_attempt_at": isoformat(event.next_attempt_at) if event.next_attempt_at else None}


def _event_or_404(event_id: int) -> DomainEvent:
    event = db.session.get(DomainEvent, event_id)
    if event is None:
        raise NotFound("Event not found (or purged after the retention period)",
                       details={"event_id": event_id})
    return event


def event_timeline(event_id: int) -> dict:
    """An event's path: recorded, then each delivery step, then its notification decisions."""
    event = _event_or_404(event_id)
    steps = db.session.scalars(select(DeliveryStep).where(DeliveryStep.event_id == event_id)
                               .order_by(DeliveryStep.id))
    recorded = {"step": "recorded", "at": isoformat(event.created_at),
                "detail": {"request_id": event.request_id, "actor_id": event.actor_id}}
    decisions = db.session.scalars(
        select(NotificationDecision).where(NotificationDecision.event_id == event_id)
        .order_by(NotificationDecision.id))
    return {"event": _event_json(event), "steps": [recorded, *map(_step_json, steps)],
            "decisions": [_decision_json(row) for row in decisions]}


def user_event_timeline(event_id: int, user_id: int) -> dict:
    """Every decision taken for one user about one event (also when none made a notification)."""
    event = _event_or_404(event_id)
    if db.session.get(User, user_id) is None:
        raise NotFound("User not found", details={"user_id": user_id})
    decisions = list(db.session.scalars(
        select(NotificationDecision)
        .where(NotificationDecision.event_id == event_id,
               or_(NotificationDecision.user_id == user_id,
                   NotificationDecision.user_id.is_(None)))
        .order_by(NotificationDecision.id)))
    notification_ids = [row.id for row in db.session.scalars(
        select(Notification).where(Notification.event_id == event_id,
                                   Notification.user_id == user_id))]
    found = [_decision_json(row) for row in decisions]
    if not any(row["user_id"] == user_id for row in found):
        # Nothing was decided about this user: say why rather than answer with silence.
        # Here, not at the top: the notifications package's decisions module imports this one.
        from app.services.notifications import RULE_EVENTS

        reason = (f"no notification rule for {event.name}" if event.name not in RULE_EVENTS
                  else "not in the audience of any rule that matched")
        found.append({"decision": "not_a_recipient", "reason": reason, "at": None,
                      "user_id": user_id, "event_id": event_id, "notification_id": None,
                      "detail": {}})
    return {"event": _event_json(event), "user_id": user_id,
            "notification_ids": notification_ids, "decisions": found}


def notification_timeline(notification_id: int) -> dict:
    """A notification's decisions: those about it, and its event's for its user."""
    notification = db.session.get(Notification, notification_id)
    if notification is None:
        raise NotFound("Notification not found", details={"notification_id": notification_id})
    condition = NotificationDecision.notification_id == notification_id
    if notification.event_id is not None:
        condition = or_(condition, (NotificationDecision.event_id == notification.event_id)
                        & (NotificationDecision.user_id == notification.user_id))
    decisions = db.session.scalars(select(NotificationDecision).where(condition)
                                   .order_by(NotificationDecision.id))
    return {"notification": {"id": notification.id, "user_id": notification.user_id,
                             "event_id": notification.event_id, "type": notification.type,
                             "created_at": isoformat(notification.created_at),
                             "delivered_at": isoformat(notification.delivered_at)
                             if notification.delivered_at else None},
            "decisions": [_decision_json(row) for row in decisions]}
