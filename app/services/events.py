"""The outbox: append a domain event in the caller's transaction, enqueue it after commit.

Every service function that changes an episode, job or file calls :func:`record`. The
event row commits with the change; the Celery task that delivers it is enqueued only
after the commit (the wake-up protocol: ``app/services/drain.py``). If the broker is down
the request still succeeds: the row waits in the outbox and the re-delivery beat task
picks it up.
"""
from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import insert

from app import logs, metrics
from app.extensions import db
from app.models import DomainEvent, Episode, File, User
from app.services import drain
from app.services.transaction import atomic, collect_on_commit

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
    collect_on_commit(db.session(), "ec_metrics", metrics.events_recorded).extend(r["name"] for r in rows)
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
    collect_on_commit(db.session(), "ec_metrics", metrics.events_recorded).append(name)
    return Recorded(event_id, name)


def broadcast(actor: User, *, namespace: str, room: str, name: str, data: dict) -> Recorded:
    """An admin's event to a room of a namespace, through the outbox like every other one."""
    with atomic():
        return record(name, action="", actor=actor, resource_type="broadcast", resource_id=None,
                      payload={"_rooms": [[namespace, room]], "data": data})


# The resource columns of an event about a row: its type and the column that names it.
_RESOURCES: dict[type, tuple[str, str]] = {Episode: ("episode", "title"), File: ("file", "filename")}


def record_change(name: str, *, action: str, actor: User | None, resource: Episode | File,
                  payload: dict, changes: dict | None = None) -> Recorded:
    """``record`` for a change to an episode or a file: the resource columns come from the row."""
    resource_type, label = _RESOURCES[type(resource)]
    return record(name, action=action, actor=actor, resource_type=resource_type,
                  resource_id=resource.id, resource_name=getattr(resource, label),
                  payload=payload, changes=changes)


def _wake_after_commit(event_ids: list[int]) -> None:
    """Enqueue these events once the transaction commits: one wake-up per commit."""
    collect_on_commit(db.session(), "ec_events", _wake_many).extend(event_ids)


def _wake_many(event_ids: list[int]) -> None:
    # Looked up at commit time, so a test can replace ``drain.wake_many``.
    drain.wake_many(event_ids)
