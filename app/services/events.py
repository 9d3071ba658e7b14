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

from app.extensions import db
from app.models import DomainEvent, User
from app.services.transaction import on_commit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestMeta:
    """Where a change came from; set by the API layer, read here, never ``request``."""

    ip_address: str | None = None
    user_agent: str | None = None


request_meta: ContextVar[RequestMeta] = ContextVar("request_meta", default=RequestMeta())  # noqa: B039 - frozen dataclass


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
) -> DomainEvent:
    """Append one event to the outbox in the current transaction."""
    meta = request_meta.get()
    evt = DomainEvent(
        name=name,
        action=action,
        actor_id=actor.id if actor is not None else None,
        resource_type=resource_type,
        resource_id=resource_id,
        resource_name=resource_name,
        payload=payload or {},
        changes=changes,
        ip_address=meta.ip_address,
        user_agent=(meta.user_agent or "")[:512] or None,
    )
    db.session.add(evt)
    db.session.flush()  # the id is needed for the after-commit enqueue
    event_id = evt.id
    on_commit(db.session(), lambda: enqueue(event_id))
    return evt


def enqueue(event_id: int) -> bool:
    """Hand an event to the delivery worker; False (and logged) when the broker is away."""
    from workers.events import deliver  # lazy: workers import app services, not the reverse

    try:
        deliver.apply_async(args=[event_id])
    except Exception as exc:  # noqa: BLE001 - broker down: the outbox keeps the event
        log.warning("enqueue of event %s failed, left in the outbox: %s", event_id, exc)
        return False
    return True
