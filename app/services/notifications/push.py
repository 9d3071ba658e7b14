"""Dispatch: decide for each committed, due row whether it is pushed live, emailed or held."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, and_, or_, select, update

from app import tasks
from app.extensions import db
from app.models import DomainEvent, Notification, User, isoformat, utcnow
from app.realtime.emit import FEED, user_room
from app.services import events, mail
from app.services.batch import rows_by_id
from app.services.notifications import decisions
from app.services.notifications.emails import enqueue_emails
from app.services.notifications.fanout import RULE_EVENTS
from app.services.notifications.policy import Decision, rate_positions, should_notify
from app.services.notifications.preferences import load_prefs
from app.services.notifications.sql import due, id_in
from app.services.transaction import atomic

log = logging.getLogger(__name__)


@dataclass
class DispatchResult:
    pushed: list[int] = field(default_factory=list)
    emailed: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    claimed: int = 0  # rows this dispatch claimed (an email-only row is in none of the above)

    @property
    def total(self) -> int:
        return len(self.pushed) + len(self.held) + len(self.dropped)


def dispatch(condition: ColumnElement[bool], *, now: datetime | None = None,
             limit: int | None = None,
             actors: Mapping[int, dict] | None = None) -> DispatchResult:
    """Decide and act for every undelivered, due row matching ``condition``; commits.

    The rows are claimed by one ``UPDATE ... SET delivered_at ... RETURNING``: a second
    worker's claim waits on the row locks and then finds them delivered, so no row is pushed
    twice by two workers. Each push is a ``notification`` event appended to the outbox in
    the claim's own transaction: the claim and its pushes commit together or not at all,
    and the outbox emits them (in id order, replayable to a reconnecting client) like every
    other event.
    """
    with atomic():
        result = _claim_and_decide(condition, now or utcnow(), limit, actors)
    if result.emailed and mail.enabled():
        enqueue_emails(result.emailed)
    return result


def _claim_and_decide(condition: ColumnElement[bool], now: datetime, limit: int | None,
                      actors: Mapping[int, dict] | None) -> DispatchResult:
    """:func:`dispatch`'s work inside its unit: claim, decide, record the pushes."""
    table = Notification.__table__
    candidates = (select(Notification.id)
                  .where(condition, Notification.delivered_at.is_(None), due(now))
                  .order_by(Notification.id))
    if limit:
        candidates = candidates.limit(limit)
    if db.engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    claim = (update(Notification)
             .where(Notification.id.in_(candidates.scalar_subquery()),
                    Notification.delivered_at.is_(None))
             .values(delivered_at=now, updated_at=now)
             .returning(*table.c)
             .execution_options(synchronize_session=False))
    rows = sorted(db.session.execute(claim), key=lambda r: r.id)
    result = DispatchResult(claimed=len(rows))
    if not rows:
        return result
    prefs = load_prefs(r.user_id for r in rows)
    limit_per_hour = current_app.config["NOTIFICATION_RATE_LIMIT_PER_HOUR"]
    positions = rate_positions([(r.id, r.user_id) for r in rows], now)
    if actors is None:
        actors = _actors_of({r.event_id for r in rows if r.event_id})
    pushes: list[Push] = []
    notes: list[decisions.Note] = []
    for row in rows:
        position = positions.get(row.id, 0)
        decision = should_notify(prefs[row.user_id], type=row.type, priority=row.priority, now=now,
                                 over_rate_limit=position > limit_per_hour)
        notes += _notes(row, decision, prefs[row.user_id].channels_for(row.type), position)
        if decision.push:
            pushes.append(Push(row.user_id, notification_payload(row), actors.get(row.event_id),
                               isoformat(row.deliver_at or row.created_at)))
            result.pushed.append(row.id)
        if decision.email:
            result.emailed.append(row.id)
        if decision.digest:
            result.held.append(row.id)
        elif not decision.push and not decision.email:
            result.dropped.append(row.id)
    events.record_many(batch_events("notification", pushes))
    decisions.note_many(notes)
    for held in id_in(Notification.id, result.held):
        db.session.execute(update(Notification).where(held).values(digest_pending=True)
                           .execution_options(synchronize_session=False))
    return result


def _notes(row: Any, decision: Decision, channels: Sequence[str],
           position: int) -> list[decisions.Note]:
    """What :func:`dispatch` decided for one row, as the decisions it records."""
    base = {"notification_id": row.id, "type": row.type, "priority": row.priority}
    notes = [decisions.Note(row.user_id, row.event_id, decisions.CHANNELS, "preference",
                            {**base, "channels": list(channels), "rate_position": position})]
    if decision.reason in (decisions.QUIET_HOURS, decisions.RATE_LIMITED):
        notes.append(decisions.Note(row.user_id, row.event_id, decision.reason, decision.reason, base))
    if decision.push:
        notes.append(decisions.Note(row.user_id, row.event_id, decisions.PUSHED, decision.reason, base))
    if decision.email:
        notes.append(decisions.Note(row.user_id, row.event_id, decisions.EMAIL_QUEUED, decision.reason, base))
    if decision.digest:
        notes.append(decisions.Note(row.user_id, row.event_id, decisions.DIGEST, decision.reason, base))
    elif not decision.push and not decision.email:
        notes.append(decisions.Note(row.user_id, row.event_id, decisions.DROPPED, decision.reason, base))
    return notes


def notification_payload(n: Any) -> dict:
    """The ``notification`` push's data: a row as ``GET /notifications/<id>`` returns it."""
    return {
        "id": n.id,
        "user_id": n.user_id,
        "type": n.type,
        "title": n.title,
        "message": n.message,
        "data": n.data or {},
        "priority": n.priority,
        "read": n.read_at is not None,
        "read_at": isoformat(n.read_at),
        "created_at": isoformat(n.created_at),
        "deliver_at": isoformat(n.deliver_at),
        "expires_at": isoformat(n.expires_at),
        "event_id": n.event_id,
    }


def user_event(name: str, user_id: int, data: dict, *, resource_id: int | None = None,
               actor: dict | None = None, timestamp: str | None = None) -> dict:
    """The outbox spec of an event for one user's /feed room (``events.record_many``).

    Its envelope is prepared here (``_actor``, ``_timestamp``): the delivery that emits it,
    and a replay that re-sends it, read no row to build it. No ``action``: real-time only,
    not in the activity log.
    """
    return {"name": name, "action": "", "actor": None, "resource_type": "notification",
            "resource_id": resource_id,
            "payload": {"_rooms": [[FEED, user_room(user_id)]], "data": data, "_actor": actor,
                        **({"_timestamp": timestamp} if timestamp else {})}}


@dataclass(frozen=True)
class Push:
    """One user's envelope parts, before :func:`batch_events` groups them."""

    user_id: int
    data: dict
    actor: dict | None
    timestamp: str | None


_MISSING = object()


def batch_events(name: str, pushes: Sequence[Push]) -> list[dict]:
    """The outbox specs of a claim's pushes: ONE event for all of them (not one per user).

    Delivery emits it to each user's own /feed room with that user's envelope, and replay
    gives a user only its own (``emit.batch_envelope``): one outbox row, one emit batch and
    one replay entry per claim instead of one per user, so a 10,000-user broadcast is ten
    events, not 10,000 (and a client away during it stays within ``REPLAY_LIMIT``).
    The payload is compact: ``base`` holds the envelope parts every push shares (for a
    broadcast all but the notification's ``id`` and ``user_id``), ``users`` each user's id
    and what differs. Every user appears once per event (the envelope id is the event's,
    shared by its users): a user with two rows in one claim gets a second event.
    """
    layers: list[list[Push]] = []
    depth: dict[int, int] = {}
    for push in pushes:
        level = depth.get(push.user_id, 0)
        depth[push.user_id] = level + 1
        if level == len(layers):
            layers.append([])
        layers[level].append(push)
    return [_batch_event(name, layer) for layer in layers]


def _batch_event(name: str, pushes: list[Push]) -> dict:
    first = pushes[0]
    data = {k: v for k, v in first.data.items()
            if all(p.data.get(k, _MISSING) == v for p in pushes)}
    base: dict = {"data": data}
    for part in ("actor", "timestamp"):
        if all(getattr(p, part) == getattr(first, part) for p in pushes):
            base[part] = getattr(first, part)
    users = []
    for push in pushes:
        own: dict = {"data": {k: v for k, v in push.data.items() if k not in data}}
        own.update({part: getattr(push, part) for part in ("actor", "timestamp") if part not in base})
        users.append([push.user_id, own])
    return {"name": name, "action": "", "actor": None, "resource_type": "notification",
            "resource_id": first.data.get("id") if len(pushes) == 1 else None,
            "payload": {"_batch": {"namespace": FEED, "base": base, "users": users}}}


def _actors_of(event_ids: set[int]) -> dict[int, dict]:
    if not event_ids:
        return {}
    query = (select(DomainEvent.id, User.id, User.name).join(User, User.id == DomainEvent.actor_id)
             .where(DomainEvent.id.in_(sorted(event_ids))))
    return {eid: {"id": uid, "name": name} for eid, uid, name in db.session.execute(query)}


def push_for_events(batch: Sequence[DomainEvent]) -> int:
    """Delivery step (after the commit that stored the rows): dispatch the rows of these events.

    The straight line: ``fanout.create_for_events`` stored the rows in the delivery
    transaction; this claims them (no count first: the usual batch makes a handful) and
    records each push as a ``notification`` event in the outbox. A claim that comes back
    full is a large fan-out (an admin broadcast): the rest is cut into id ranges of
    ``NOTIFICATION_DISPATCH_BATCH`` rows, each a task any worker process may take, so the
    pushes to 10,000 users run in parallel. Should the broker refuse a range, it is done
    here; should a range task be lost, the beat sweep (:func:`deliver_due`) picks it up.
    """
    rule_events = [event for event in batch if event.name in RULE_EVENTS]
    if not rule_events:
        return 0
    condition = Notification.event_id.in_([event.id for event in rule_events])
    now = utcnow()
    size = current_app.config["NOTIFICATION_DISPATCH_BATCH"]
    users = rows_by_id(User, (event.actor_id for event in rule_events))  # read by the batch
    actors = {event.id: {"id": user.id, "name": user.name} for event in rule_events
              if (user := users.get(event.actor_id)) is not None}
    result = dispatch(condition, now=now, limit=size, actors=actors)
    if result.claimed < size:
        return result.claimed
    ids = list(db.session.scalars(
        select(Notification.id).where(condition, Notification.delivered_at.is_(None), due(now))
        .order_by(Notification.id)))
    db.session.rollback()
    for start in range(0, len(ids), size):
        first, last = ids[start], ids[min(start + size, len(ids)) - 1]
        try:
            tasks.enqueue("workers.notifications.dispatch_range", first, last)
        except Exception as exc:  # noqa: BLE001 - broker away: do this range ourselves
            log.warning("could not enqueue a dispatch range, dispatching inline: %s", exc)
            dispatch_ids(first, last)
    return result.claimed + len(ids)


def push_for_event(event: DomainEvent) -> int:
    """:func:`push_for_events` for one event."""
    return push_for_events([event])


def dispatch_ids(first_id: int, last_id: int) -> DispatchResult:
    """Dispatch the undelivered, due rows with ids in ``[first_id, last_id]`` (one range)."""
    return dispatch(and_(Notification.id >= first_id, Notification.id <= last_id))


def deliver_due(*, now: datetime | None = None, batch: int | None = None) -> int:
    """Beat: push what is due and was not pushed; returns how many rows it dispatched.

    Scheduled rows whose ``deliver_at`` has come, and the catch-up: rows older than
    ``NOTIFICATION_PUSH_GRACE_SECONDS`` that no delivery pushed (an after-commit push that
    failed, a lost range task). The catch-up looks back one day only: it scans the
    ``created_at`` index, and an older notification is in the inbox anyway.
    """
    now = now or utcnow()
    batch = batch or current_app.config["NOTIFICATION_SWEEP_BATCH"]
    grace = timedelta(seconds=current_app.config["NOTIFICATION_PUSH_GRACE_SECONDS"])
    missed = and_(Notification.deliver_at.is_(None), Notification.created_at <= now - grace,
                  Notification.created_at >= now - timedelta(days=1))
    total = 0
    while True:
        result = dispatch(or_(Notification.deliver_at.is_not(None), missed), now=now, limit=batch)
        total += result.total
        if result.claimed < batch:
            return total
