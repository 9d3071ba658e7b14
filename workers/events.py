"""Delivery of domain events (the outbox consumer) and the re-delivery sweep."""
from __future__ import annotations

from celery import shared_task

from app.services import delivery


@shared_task(name="workers.events.deliver", acks_late=True, ignore_result=True)
def deliver(event_id: int) -> bool:
    """Deliver one event: activity, notifications, emits; idempotent on the event id."""
    return delivery.deliver_event(event_id)


@shared_task(name="workers.events.redeliver_stale", ignore_result=True)
def redeliver_stale() -> int:
    """Beat: re-enqueue events still undelivered after the grace period."""
    return len(delivery.redeliver_stale())


@shared_task(name="workers.events.drain", acks_late=True, ignore_result=True)
def drain() -> int:
    """Deliver batches of events until the outbox is empty (woken by commits via Redis)."""
    return delivery.drain()
