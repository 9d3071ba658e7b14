"""The outbox drain protocol, in one place: the flag, the wake-up, the drainer's loop.

Producers commit, then wake delivery (``wake_many``, an after-commit callback of
``events.record``). With Redis, the first commit ``SET NX``es :data:`DRAIN_FLAG` and enqueues
one ``workers.events.drain`` task; later commits see the flag and enqueue nothing. The
drainer (:func:`drain`) clears the flag only when a batch comes back empty and then looks at
the outbox once more, so an event committed while the flag was set is never left behind;
whoever sets the flag again after that look enqueues the next drainer. Without Redis (the
embedded default) there is no drainer: each event gets its own ``deliver`` task.

This module sits below ``delivery`` (``events`` imports it to wake, ``delivery`` to re-wake
stale events), so the drainer is handed delivery's batch function rather than importing it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import current_app
from sqlalchemy import select

from app import tasks
from app.extensions import db
from app.models import DomainEvent, utcnow
from app.redis_client import get_redis, when_redis_returns

log = logging.getLogger(__name__)

DRAIN_FLAG = "ec:delivery:draining"
DRAIN_FLAG_TTL = 15  # seconds; a dead drainer's flag expires and the next commit wakes another


def wake_many(event_ids: list[int]) -> bool:
    """Wake delivery for the events of one commit: one drain wake-up with Redis, else a
    task per event (the embedded default has no drainer)."""
    if not event_ids:
        return True
    try:
        drainer = get_redis() is not None
    except Exception as exc:  # noqa: BLE001 - the outbox keeps the events for the sweep
        log.warning("enqueue of events %s failed, left in the outbox: %s", event_ids, exc)
        return False
    if drainer:
        return wake(event_ids[-1])
    return all([wake(event_id) for event_id in event_ids])


def wake(event_id: int, *, explicit: bool = False) -> bool:
    """Wake the delivery worker for an event; False (and logged) when the broker is away.

    With Redis, commits do not each enqueue a task: the first one sets the flag and
    enqueues one ``drain`` task; commits that see the flag set know a drainer will see
    their event. ``explicit`` (the re-delivery sweep) names the event, so one waiting out a
    failure backoff is tried.
    """
    try:
        client = None if explicit else get_redis()
        if client is None:
            tasks.enqueue("workers.events.deliver", event_id)
        elif client.set(DRAIN_FLAG, "1", nx=True, ex=DRAIN_FLAG_TTL):
            try:
                tasks.enqueue("workers.events.drain")
            except Exception:
                client.delete(DRAIN_FLAG)  # nobody will drain: let the next commit try
                raise
    except Exception as exc:  # noqa: BLE001 - broker down: the outbox keeps the event
        log.warning("enqueue of event %s failed, left in the outbox: %s", event_id, exc)
        if not explicit:
            _wake_when_redis_returns(event_id)
        return False
    return True


_wake_pending: set[str] = set()  # Redis URLs with a wake-up waiting (one app per URL)


def _wake_when_redis_returns(event_id: int) -> None:
    """Once Redis answers again, wake a drainer for what this process left in the outbox.

    Without it those events wait for the next commit's wake-up or the beat's sweep (a
    minute or more) even though Redis is back. One pending wake-up per process and Redis:
    the drainer delivers every due event, not only the ones named.
    """
    url = current_app.config.get("REDIS_URL") or ""
    if url in _wake_pending:
        return
    app = current_app._get_current_object()

    def on_return(_client) -> None:
        _wake_pending.discard(url)
        log.info("Redis answers again: waking delivery for what waits in the outbox")
        with app.app_context():
            wake(event_id)  # failing again, it registers the next wake-up itself

    if when_redis_returns(on_return):
        _wake_pending.add(url)


def has_due_events() -> bool:
    """Is any undelivered event due (not waiting out a failure backoff)?"""
    now = utcnow()
    found = db.session.scalar(
        select(DomainEvent.id).where(
            DomainEvent.delivered_at.is_(None),
            DomainEvent.next_attempt_at.is_(None) | (DomainEvent.next_attempt_at <= now))
        .limit(1))
    db.session.rollback()
    return found is not None


def drain(deliver_batch: Callable[[], list[int]], *, max_seconds: float = 20.0) -> int:
    """Deliver batches until no due event is left; the number delivered.

    The flag is cleared only when a batch comes back empty, and then the outbox is looked
    at once more: an event committed before its producer saw the flag still set is caught
    by that last look, so no event waits for the sweep. One drainer at a time also keeps
    emits in id order. After ``max_seconds`` the work is handed to a fresh task.
    """
    client = get_redis()
    try:
        return _drain(client, deliver_batch, max_seconds)
    except Exception:
        # Let the next commit wake a drainer at once instead of after the flag's TTL
        # (Redis itself may be what failed: then there is nothing to clear).
        if client is not None:
            try:
                client.delete(DRAIN_FLAG)
            except Exception:  # noqa: BLE001
                pass
        raise


def _drain(client, deliver_batch: Callable[[], list[int]], max_seconds: float) -> int:
    deadline = time.monotonic() + max_seconds
    total = 0
    while True:
        if client is not None:
            client.expire(DRAIN_FLAG, DRAIN_FLAG_TTL)
        delivered = deliver_batch()
        total += len(delivered)
        if delivered:
            if time.monotonic() > deadline:
                tasks.enqueue("workers.events.drain")  # keep the flag: the next task goes on
                return total
            continue
        if client is None:
            return total
        client.delete(DRAIN_FLAG)
        if not has_due_events():
            return total
        if not client.set(DRAIN_FLAG, "1", nx=True, ex=DRAIN_FLAG_TTL):
            return total  # a producer took over and enqueued another drainer
