"""The outbox: append a domain event in the caller's transaction, enqueue it after commit.

Every service function that changes an episode, job or file calls :func:`record`. The
event row commits with the change; the Celery task that delivers it is enqueued only
after the commit. If the broker is down the request still succeeds: the row waits in
the outbox and the re-delivery beat task picks it up.
"""
from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import insert

from app import logs
from app.extensions import db
from app.models import DomainEvent, User
from app.services.transaction import collect_on_commit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestMeta:
    """Where a change came from; set by the API layer, read here, never ``request``."""

    ip_address: str | None = None
    user_agent: str | None = None


request_meta: ContextVar[RequestMeta] = ContextVar("request_meta", default=RequestMeta())  # noqa: B039 - frozen dataclass


@dataclass(frozen=True)
class Recorded:
    """An event appended to the outbox (callers need its id, for responses and tests)."""

    id: int
    name: str


def _values(name: str, *, action: str, actor: User | None, resource_type: str,
            resource_id: int | None, resource_name: str | None = None,
            payload: dict | None = None, changes: dict | None = None) -> dict:
    meta = request_meta.get()
    return {
        "request_id": logs.current("request_id"),
        "name": name,
        "action": action,
        "actor_id": actor.id if actor is not None else None,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "resource_name": resource_name,
        "payload": payload or {},
        "changes": changes,
        "ip_address": meta.ip_address,
        "user_agent": (meta.user_agent or "")[:512] or None,
    }


# A Core INSERT ... RETURNING id, not an ORM add + flush: the outbox row is written once and
# never read back in this transaction, and the unit of work cost twice as much CPU per row.
_TABLE = DomainEvent.__table__
_INSERT = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


def record_many(specs: list[dict]) -> list[Recorded]:
    """Append many events with one INSERT, ids in list order; specs hold ``record``'s arguments."""
    rows = [_values(spec.pop("name"), **spec) for spec in specs]
    if not rows:
        return []
    ids = list(db.session.execute(_INSERT, rows).scalars())
    _wake_after_commit(ids)
    return [Recorded(event_id, row["name"]) for event_id, row in zip(ids, rows, strict=True)]


def record(
    name: str,
    *,
    action: str,
    actor: User | None,
    resource_type: str,
    resource_id: int | None,
    resource_name: str | None = None,
    payload: dict | None = None,
    changes: dict | None = None,
) -> Recorded:
    """Append one event to the outbox in the current transaction."""
    values = _values(name, action=action, actor=actor, resource_type=resource_type,
                     resource_id=resource_id, resource_name=resource_name, payload=payload,
                     changes=changes)
    event_id = db.session.execute(_INSERT, values).scalar_one()
    _wake_after_commit([event_id])  # the id is what the after-commit wake-up names
    return Recorded(event_id, name)


def _wake_after_commit(event_ids: list[int]) -> None:
    """Enqueue these events once the transaction commits: one wake-up per commit."""
    collect_on_commit(db.session(), "ec_events", enqueue_many).extend(event_ids)


DRAIN_FLAG = "ec:delivery:draining"
DRAIN_FLAG_TTL = 15  # seconds; a dead drainer's flag expires and the next commit wakes another


def enqueue_many(event_ids: list[int]) -> bool:
    """Wake delivery for the events of one commit: one drain wake-up with Redis, else a
    task per event (the embedded default has no drainer)."""
    from app.redis_client import get_redis

    if not event_ids:
        return True
    try:
        drainer = get_redis() is not None
    except Exception as exc:  # noqa: BLE001 - the outbox keeps the events for the sweep
        log.warning("enqueue of events %s failed, left in the outbox: %s", event_ids, exc)
        return False
    if drainer:
        return enqueue(event_ids[-1])
    return all([enqueue(event_id) for event_id in event_ids])


def enqueue(event_id: int, *, explicit: bool = False) -> bool:
    """Wake the delivery worker for an event; False (and logged) when the broker is away.

    With Redis, commits do not each enqueue a task: the first one sets a flag and enqueues
    one ``drain`` task, which delivers batches until nothing is left (see
    ``delivery.drain``); commits that see the flag set know a drainer will see their event.
    ``explicit`` (the re-delivery sweep) names the event, so one waiting out a failure
    backoff is tried.
    """
    from app import tasks
    from app.redis_client import get_redis

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
    from flask import current_app

    from app.redis_client import when_redis_returns

    url = current_app.config.get("REDIS_URL") or ""
    if url in _wake_pending:
        return
    app = current_app._get_current_object()

    def wake(_client) -> None:
        _wake_pending.discard(url)
        log.info("Redis answers again: waking delivery for what waits in the outbox")
        with app.app_context():
            enqueue(event_id)  # failing again, it registers the next wake-up itself

    if when_redis_returns(wake):
        _wake_pending.add(url)
