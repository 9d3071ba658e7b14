"""Fan-out: the notification rows a batch of domain events creates (rules, broadcasts)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, select

from app.extensions import db
from app.models import DomainEvent, Episode, Notification, NotificationPreference, User, utcnow
from app.models.base import insert_for_dialect
from app.services.batch import rows_by_id
from app.services.notifications import decisions, rules
from app.services.notifications.catalog import expiry_for, render
from app.services.notifications.policy import should_notify
from app.services.notifications.preferences import Prefs, load_prefs
from app.services.notifications.sql import id_in, insert_rows, typed

BROADCAST_EVENT = "notification_sent"


RULE_EVENTS = frozenset(rule.event for rule in rules.RULES) | {BROADCAST_EVENT}


def row(user_id: int, notification_type: str, title: str, message: str, *, data: dict,
        priority: str, event_id: int | None, now: datetime, deliver_at: datetime | None = None,
        expires_at: datetime | None = None) -> dict:
    """The column values of one new notification row (expiry from the catalog)."""
    if expires_at is None:
        expires_at = expiry_for(notification_type, deliver_at or now)
    return {
        "user_id": user_id, "type": notification_type, "title": title[:255], "message": message,
        "data": data, "priority": priority, "event_id": event_id, "deliver_at": deliver_at,
        "expires_at": expires_at, "read_at": None, "delivered_at": None,
        "digest_pending": False, "created_at": now, "updated_at": now,
    }


def create_for_events(events: Sequence[DomainEvent]) -> int:
    """Delivery step (in the delivery transaction): the notification rows of a batch.

    The rules run per event; the recipients' preferences are read once and the rows are
    inserted in one statement per run of rule events (a broadcast, its own INSERT ...
    SELECT, goes in between, so row ids follow event order). Idempotent on the event id:
    a second delivery inserts nothing and does not fail.
    """
    created = 0
    planned: list[tuple[DomainEvent, rules.Planned]] = []
    # The rows the rules will read, in one query each for the whole batch (job and file
    # events name an episode; episode events carry their title and owner).
    rule_events = [e for e in events if e.name in RULE_EVENTS]
    rows_by_id(User, (e.actor_id for e in rule_events))
    rows_by_id(Episode, ((e.payload or {}).get("episode_id") for e in rule_events
                         if not e.name.startswith("episode_")))
    for event in events:
        if event.name == BROADCAST_EVENT:
            created += _insert_planned(planned) + _create_broadcast(event)
            planned = []
        elif event.name in RULE_EVENTS:
            planned += [(event, item) for item in rules.plan(event)]
    created += _insert_planned(planned)
    return created


def _insert_planned(planned: list[tuple[DomainEvent, rules.Planned]]) -> int:
    """Store what the rules planned, minus what preferences drop; how many rows were new."""
    if not planned:
        return 0
    now = utcnow()
    prefs = load_prefs(item.user_id for _event, item in planned)
    rows = []
    notes = []
    for event, item in planned:
        if not should_notify(prefs[item.user_id], type=item.type, priority=item.priority,
                             now=now).store:
            notes.append(decisions.Note(item.user_id, event.id, decisions.MUTED, "preference",
                                        {"type": item.type}))
            continue
        title, message = render(item.type, item.variables)
        rows.append(row(item.user_id, item.type, title, message, data=item.data,
                        priority=item.priority, event_id=event.id, now=now))
    inserted = insert_rows(rows)
    by_user_event = {(r["user_id"], r["event_id"]): r["type"] for r in rows}
    notes += [decisions.Note(uid, event_id, decisions.CREATED, "stored",
                             {"type": by_user_event.get((uid, event_id)), "notification_id": nid})
              for nid, uid, event_id in inserted]
    decisions.note_many(notes)
    return len(inserted)


def recipients(target: Mapping[str, Any]) -> list[int]:
    """Active users named by ``{"user_ids": [...]}``, ``{"role": ...}`` or ``{"all": true}``."""
    query = select(User.id).where(User.is_active.is_(True)).order_by(User.id)
    return [uid for condition in target_conditions(target)
            for uid in db.session.scalars(query.where(condition))]


def target_conditions(target: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    """SQL conditions on ``users`` selecting a send's recipients (several: SQLite chunks)."""
    if target.get("user_ids") is not None:
        return list(id_in(User.id, sorted(set(target["user_ids"]))))
    if target.get("role"):
        return [User.role == target["role"]]
    if target.get("all"):
        return [User.id.is_not(None)]
    return []


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _create_broadcast(event: DomainEvent) -> int:
    """The rows of an admin send: ONE ``INSERT ... SELECT`` over the recipients.

    The database builds the rows itself, so 10,000 users cost one statement, not 10,000
    bound rows. Only users with a preference row can mute, so just those are checked here.
    """
    payload = event.payload or {}
    notification_type, priority = payload["type"], payload.get("priority", "normal")
    deliver_at, expires_at = _parse_time(payload.get("deliver_at")), _parse_time(payload.get("expires_at"))
    if expires_at is None:
        expires_at = expiry_for(notification_type, deliver_at or utcnow())
    now = utcnow()
    data = {"event": BROADCAST_EVENT, "sent_by": event.actor_id, **(payload.get("data") or {})}
    values = {"type": notification_type, "title": payload["title"][:255],
              "message": payload.get("message", ""), "data": data, "priority": priority,
              "event_id": event.id, "deliver_at": deliver_at, "expires_at": expires_at,
              "digest_pending": False, "created_at": now, "updated_at": now}
    table = Notification.__table__
    columns = table.c
    inserted = 0
    for condition in target_conditions(payload):
        active = and_(User.is_active.is_(True), condition)
        muted = [
            pref.user_id for pref in db.session.scalars(
                select(NotificationPreference).join(User, User.id == NotificationPreference.user_id)
                .where(active))
            if not should_notify(Prefs.from_row(pref), type=notification_type, priority=priority,
                                 now=now).store
        ]
        decisions.note_many(decisions.Note(uid, event.id, decisions.MUTED, "preference",
                                           {"type": notification_type}) for uid in muted)
        where = [active, *(~c for c in id_in(User.id, muted))]
        rows = select(User.id, *(typed(v, columns[k].type) for k, v in values.items())).where(*where)
        stmt = (insert_for_dialect(table).from_select(["user_id", *values], rows)
                .on_conflict_do_nothing(index_elements=["user_id", "event_id"]))
        inserted += db.session.execute(stmt).rowcount
    return inserted
