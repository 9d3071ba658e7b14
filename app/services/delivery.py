"""Delivering domain events: the single place every side effect hangs off.

Events are delivered in batches, oldest first, in one transaction per batch:
1. the activity rows (unique ``event_id``),
2. the notification rows (unique ``user_id, event_id``), see ``notifications``,
3. the Socket.IO emits of the events to their rooms, in id order. They go out before the
   delivery commit on purpose: the change itself committed long ago, and if this
   transaction fails the events are delivered (and emitted) again — at-least-once, clients
   de-duplicate by id — instead of being marked delivered and never emitted;
4. the events are marked delivered; commit; then the notification rows are dispatched
   (``notifications.push_for_events``): each live push is a ``notification`` event appended
   to this same outbox, emitted by the next batch (rows are committed before a client
   can fetch them, and a reconnecting client gets the pushes it missed replayed).
Every step is idempotent on the event id. A batch that fails is retried one event at a
time, so one bad event cannot hold the others back; it is left undelivered with a backoff
and the beat sweep re-enqueues it.

Why batches: one Celery task and five round trips per event caps a 2-core machine at a few
hundred events per second; a batch shares the round trips and the commit. The task for
event N delivers N together with the oldest undelivered events (``SKIP LOCKED`` on
PostgreSQL, so two workers split a backlog instead of queueing on each other's locks); the
tasks of events already delivered by an earlier batch find nothing to do after one query.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta

from flask import current_app
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import delete, select, update

from app import logs, metrics
from app.errors import database_unavailable, rollback_quietly
from app.extensions import db
from app.models import DomainEvent, User, utcnow
from app.realtime import emit
from app.services import activity, events, notifications, replay, timeline
from app.services import drain as drain_protocol
from app.services.batch import end_batch, new_batch, rows_by_id
from app.services.transaction import atomic

log = logging.getLogger(__name__)

BATCH_SIZE = 200
Step = Callable[[list[DomainEvent]], object]


def emit_domain_events(events: list[DomainEvent]) -> int:
    """Delivery step: every event of a batch to its rooms, in id order, in one pipeline."""
    actors = rows_by_id(User, (event.actor_id for event in events))
    messages = []
    remembered = []
    for event in events:
        actor = actors.get(event.actor_id) if event.actor_id else None
        entry = emit.history_entry(event, actor)
        if "batch" in entry:  # one claim's notification pushes: each user its own envelope
            batch = entry["batch"]
            messages.extend(((batch["namespace"], emit.user_room(user_id)), event.name,
                             emit.batch_envelope(event.id, event.name, batch, own))
                            for user_id, own in batch["users"])
        else:
            messages.extend((tuple(route), event.name, entry["envelope"])
                            for route in entry["routes"])
        remembered.append(entry)
    sent = emit.emit_many(messages)
    replay.remember(remembered)  # the shared history reconnecting clients replay from
    return sent


# Steps inside the delivery transaction, in order: (name, function(events)).
IN_TRANSACTION_STEPS: list[tuple[str, Step]] = [
    ("activity", activity.log_events),
    ("notifications", notifications.create_for_events),
    ("emit", emit_domain_events),
]
# Steps after the commit that marks the events delivered.
AFTER_COMMIT_STEPS: list[tuple[str, Step]] = [
    ("notifications", notifications.push_for_events),
]


def backoff_seconds(attempts: int) -> int:
    """Grace × 2^(attempts-1), capped at an hour."""
    grace = current_app.config["EVENT_REDELIVERY_GRACE_SECONDS"]
    return int(min(3600, grace * 2 ** max(0, attempts - 1)))


def deliver_event(event_id: int) -> bool:
    """Deliver this event, with the oldest other undelivered ones; True if this call did it."""
    return event_id in deliver_batch(including=event_id)


# SQLite (the embedded default: one process) has no row locks to claim with, and its driver
# reads outside the transaction until the first write: two worker threads would claim and
# deliver the same batch. One claim at a time in the process there; PostgreSQL claims with
# SKIP LOCKED instead.
_LOCAL_CLAIM = threading.Lock()


def _claim_guard() -> AbstractContextManager:
    return nullcontext() if db.engine.dialect.name == "postgresql" else _LOCAL_CLAIM


def _claim(ids: Iterable[int] | None, including: int | None, limit: int) -> list[DomainEvent]:
    query = select(DomainEvent).where(DomainEvent.delivered_at.is_(None))
    if ids is not None:
        query = query.where(DomainEvent.id.in_(list(ids)))
    else:
        # Events waiting out a failure backoff are left to their own re-delivery.
        due = DomainEvent.next_attempt_at.is_(None) | (DomainEvent.next_attempt_at <= utcnow())
        query = query.where(due | (DomainEvent.id == including) if including else due)
    query = query.order_by(DomainEvent.id).limit(limit)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(db.session.scalars(query))


def deliver_batch(*, including: int | None = None, ids: Iterable[int] | None = None,
                  limit: int = BATCH_SIZE) -> list[int]:
    """Deliver up to ``limit`` undelivered events, oldest first; the ids delivered."""
    session = db.session()
    previous = session.expire_on_commit
    session.expire_on_commit = False  # the pushes read the events after the commit
    try:
        return _deliver_claimed(ids, including, limit)
    finally:
        end_batch()
        session.expire_on_commit = previous
        session.expire_all()  # the caller's session must not keep this batch's stale state


def _deliver_claimed(ids: Iterable[int] | None, including: int | None, limit: int) -> list[int]:
    """Claim and deliver in one ``atomic()`` unit; the after-commit steps run outside it.

    They must: ``notifications.push_for_events`` opens units of its own, and ``atomic()``
    refuses nesting.
    """
    events: list[DomainEvent] = []
    try:
        with _claim_guard(), atomic():
            events = _claim(ids, including, limit)
            if not events:
                return []
            emitted_at = _deliver(events)
    except Exception as exc:  # noqa: BLE001 - isolate the bad event: one at a time
        if not events:
            raise  # the claim itself failed: no event to blame
        rollback_quietly()
        if _infrastructure_failure(exc):
            # Redis or the database is away: no event is to blame, so none is charged an
            # attempt or a backoff. They stay due, and the first wake-up once the service
            # is back (the next commit's, or the sweep's) delivers them.
            log.warning("delivery of %s events postponed, a service is down: %s", len(events), exc)
            raise
        if len(events) == 1:
            record_failure(events[0].id, _last_error())
            return []
        log.warning("batch of %s events failed; delivering them one by one", len(events))
        delivered: list[int] = []
        for event_id in [e.id for e in events]:
            delivered += deliver_batch(ids=[event_id], limit=1)
        return delivered
    _after_commit(events, emitted_at)
    return [event.id for event in events]


def _infrastructure_failure(exc: BaseException) -> bool:
    """Redis (message queue) or the database unreachable, as opposed to a bad event."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) or database_unavailable(exc)


def _last_error() -> BaseException:
    return sys.exc_info()[1] or RuntimeError("delivery failed")


def _deliver(events: list[DomainEvent]) -> float:
    """The in-transaction steps, the timeline and the delivered mark; when the emit ran.

    Runs inside the caller's unit, which commits it.
    """
    session = db.session()
    claimed_at = utcnow()
    new_batch()
    with timeline.collecting() as decisions:
        for _name, step in IN_TRANSACTION_STEPS:
            step(events)
    emitted_at = time.time()  # the emit is the last step
    ids = [event.id for event in events]
    timeline.record_steps(_timeline_steps(events, claimed_at), decisions)
    session.execute(update(DomainEvent).where(DomainEvent.id.in_(ids))
                    .values(delivered_at=utcnow(), last_error=None,
                            attempts=DomainEvent.attempts + 1)
                    .execution_options(synchronize_session=False))
    return emitted_at


def _after_commit(events: list[DomainEvent], emitted_at: float) -> None:
    """Once the batch committed: counters, log lines, then the after-commit steps."""
    metrics.events_delivered(events, emitted_at=emitted_at)
    _log_delivered(events)
    for name, step in AFTER_COMMIT_STEPS:
        try:
            step(events)
        except Exception:  # noqa: BLE001 - delivered; the step has its own catch-up sweep
            log.exception("after-commit step %s failed", name)


def _timeline_steps(events: list[DomainEvent], claimed_at) -> list[dict]:
    """Claimed, emitted (to which rooms), delivered: three rows per event, one INSERT per batch."""
    delivered_at = utcnow()
    rows = []
    for event in events:
        rooms = [f"{namespace} {room}" for namespace, room in emit.routes_for(event)]
        rows += [timeline.step(event.id, "claimed", claimed_at, attempt=event.attempts + 1,
                               batch_size=len(events)),
                 timeline.step(event.id, "emitted", delivered_at, rooms=rooms),
                 timeline.step(event.id, "delivered", delivered_at)]
    return rows


def _log_delivered(events: list[DomainEvent]) -> None:
    """One line per event, in the context of the request that recorded it."""
    if not log.isEnabledFor(logging.INFO):
        return
    for event in events:
        with logs.bound(event_id=event.id, request_id=event.request_id,
                        user_id=event.actor_id):
            log.info("event %s %s delivered", event.id, event.name)


def record_failure(event_id: int, exc: BaseException) -> None:
    with atomic():
        event = db.session.get(DomainEvent, event_id)
        if event is None:
            return
        event.attempts += 1
        attempts, request_id = event.attempts, event.request_id
        event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        event.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(event.attempts))
        timeline.record_steps([timeline.step(event_id, "failed", attempt=attempts,
                                             error=event.last_error,
                                             next_attempt_at=event.next_attempt_at.isoformat())])
    with logs.bound(event_id=event_id, request_id=request_id):
        log.error("delivery of event %s failed (attempt %s): %s", event_id, attempts, exc)


def redeliver_stale(*, limit: int = 1000) -> list[int]:
    """Re-enqueue events undelivered past the grace period, honouring each one's backoff.

    Events that keep failing raise an alert once (log, and the alert hooks).
    """
    now = utcnow()
    grace = timedelta(seconds=current_app.config["EVENT_REDELIVERY_GRACE_SECONDS"])
    threshold = current_app.config["EVENT_MAX_ATTEMPTS_BEFORE_ALERT"]
    alerts = []
    with atomic():
        rows = list(db.session.scalars(
            select(DomainEvent)
            .where(DomainEvent.delivered_at.is_(None), DomainEvent.created_at <= now - grace)
            .where((DomainEvent.next_attempt_at.is_(None)) | (DomainEvent.next_attempt_at <= now))
            .order_by(DomainEvent.id)
            .limit(limit)
        ))
        for event in rows:
            # Push the next try out so the next sweep does not enqueue it again while queued.
            event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts + 1))
            if event.attempts >= threshold and not event.alerted:
                event.alerted = True
                alerts.append((event.id, event.name, event.attempts, event.last_error))
        ids = [event.id for event in rows]
    for alert in alerts:
        raise_alert(*alert)
    for event_id in ids:
        drain_protocol.wake(event_id, explicit=True)
    return ids


def drain(*, max_seconds: float = 20.0) -> int:
    """Deliver batches until no due event is left (the protocol: ``app/services/drain.py``)."""
    return drain_protocol.drain(deliver_batch, max_seconds=max_seconds)


def emit_admin_alert(message: str, details: dict) -> None:
    """``admin_alert`` to the /admin room, through the outbox like every other event."""
    with atomic():
        events.record("admin_alert", action="", actor=None, resource_type="system",
                      resource_id=None, payload={"message": message, **details})


ALERT_HOOKS: list[Callable[[str, dict], None]] = [notifications.alert_admins, emit_admin_alert]


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


def purge_delivered(days: int, *, batch_size: int = 5000) -> int:
    """Delete delivered events older than ``days``, in batches.

    The outbox only needs recent history (re-delivery, replay for reconnecting clients);
    activity rows and notifications keep their own copy (their ``event_id`` becomes NULL).
    Undelivered events are never deleted.
    """
    cutoff = utcnow() - timedelta(days=days)
    total = 0
    while True:
        with atomic():  # one short unit per batch
            ids = list(db.session.scalars(
                select(DomainEvent.id)
                .where(DomainEvent.delivered_at.is_not(None), DomainEvent.created_at < cutoff)
                .order_by(DomainEvent.id).limit(batch_size)))
            if not ids:
                timeline.purge_unattached_before(cutoff)
                return total
            timeline.purge_for_events(ids)  # the timeline is kept exactly as long as its event
            db.session.execute(delete(DomainEvent).where(DomainEvent.id.in_(ids)))
            replay.mark_purged(max(ids))  # clients behind this id must resync, never half-replay
        replay.forget_through(max(ids))
        total += len(ids)
