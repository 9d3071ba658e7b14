"""Sending by hand: an admin's notification to users, a role or everyone, and delivery alerts."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from app.errors import ValidationError
from app.extensions import db
from app.models import Notification, User, isoformat, utcnow
from app.models.core import ROLES
from app.models.notifications import PRIORITIES
from app.services import events
from app.services.notifications.catalog import CATALOG, TYPES, render
from app.services.notifications.fanout import BROADCAST_EVENT, recipients, row
from app.services.notifications.push import dispatch
from app.services.notifications.sql import insert_rows
from app.services.transaction import atomic


def send(actor: User, *, type: str, title: str, message: str = "", data: dict | None = None,
         priority: str = "normal", user_ids: list[int] | None = None, role: str | None = None,
         all_users: bool = False, deliver_at: datetime | None = None,
         expires_at: datetime | None = None) -> dict:
    """An admin's notification to user ids, a role, or everyone (fan-out in the worker).

    Recorded as a ``notification_sent`` domain event: durable with the request, delivered
    by the worker like every event (so it is in the activity log, and re-delivery is safe).
    """
    targets = [name for name, given in (("user_ids", user_ids is not None), ("role", bool(role)),
                                        ("all", all_users)) if given]
    if len(targets) != 1:
        message_ = "Give exactly one of user_ids, role, all."
        raise ValidationError("Choose the recipients",
                              details={name: [message_] for name in ("user_ids", "role", "all")})
    if type not in TYPES:
        raise ValidationError("Unknown type", details={"type": [f"Must be one of {TYPES}."]})
    if priority not in PRIORITIES:
        raise ValidationError("Unknown priority", details={"priority": [f"Must be one of {PRIORITIES}."]})
    if role is not None and role not in ROLES:
        raise ValidationError("Unknown role", details={"role": [f"Must be one of {ROLES}."]})
    now = utcnow()
    if deliver_at is not None and deliver_at <= now:
        deliver_at = None  # a time in the past means "now"
    if expires_at is not None and expires_at <= (deliver_at or now):
        raise ValidationError("expires_at must be after the delivery time",
                              details={"expires_at": ["Must be after deliver_at (or now)."]})
    target: dict[str, Any]
    if user_ids is not None:
        wanted = sorted(set(user_ids))
        known = set(recipients({"user_ids": wanted}))
        missing = [uid for uid in wanted if uid not in known]
        if missing:
            raise ValidationError("Unknown users", details={
                "user_ids": [f"Unknown or inactive user ids: {', '.join(map(str, missing[:20]))}"]})
        target, count = {"user_ids": wanted}, len(wanted)
    else:
        target = {"role": role} if role else {"all": True}
        query = select(func.count()).select_from(User).where(User.is_active.is_(True))
        if role:
            query = query.where(User.role == role)
        count = db.session.scalar(query) or 0
    with atomic():
        evt = events.record(
            BROADCAST_EVENT, action="created", actor=actor, resource_type="notification",
            resource_id=None, resource_name=title[:255],
            payload={**target, "type": type, "title": title, "message": message,
                     "data": data or {}, "priority": priority, "deliver_at": isoformat(deliver_at),
                     "expires_at": isoformat(expires_at), "recipients": count},
        )
    return {"event_id": evt.id, "recipients": count, "deliver_at": isoformat(deliver_at),
            "status": "scheduled" if deliver_at else "queued"}


def alert_admins(message: str, details: dict) -> None:
    """Delivery alert hook: an ``admin:alert`` (critical) to every active admin, pushed now.

    The rows are written here, not fanned out from a domain event: the alert reports that
    an event is stuck. Their pushes go through the outbox like every push (a stuck event is
    retried apart from the others, so the outbox keeps flowing).
    """
    admins = recipients({"role": "admin"})
    if not admins:
        return
    now = utcnow()
    title, body = render("admin:alert", {"message": message})
    data = {"event": "delivery_alert", **details}
    priority = CATALOG["admin:alert"].priority
    rows = [row(uid, "admin:alert", title, body, data=data, priority=priority, event_id=None,
                now=now) for uid in admins]
    with atomic():
        ids = [nid for nid, _uid, _eid in insert_rows(rows)]
    dispatch(Notification.id.in_(ids) if ids else Notification.id.is_(None))
