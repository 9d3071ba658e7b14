"""Beat-scheduled maintenance."""
from __future__ import annotations

from celery import shared_task
from flask import current_app

from app.services import activity, delivery, presence, sessions


@shared_task(name="workers.maintenance.purge_activity", ignore_result=True)
def purge_activity() -> int:
    """Delete activity older than ACTIVITY_RETENTION_DAYS, in batches."""
    return activity.purge_older_than(current_app.config["ACTIVITY_RETENTION_DAYS"])


@shared_task(name="workers.maintenance.sweep_presence", ignore_result=True)
def sweep_presence() -> int:
    """Pop sockets whose presence TTL passed (their process died) and announce them.

    Every web process does this in its refresh loop; beat's copy covers the time when no
    web process runs. Popping is atomic, so each expired socket is announced once.
    """
    return presence.sweep_expired()


@shared_task(name="workers.maintenance.purge_events", ignore_result=True)
def purge_events() -> int:
    """Delete delivered outbox events older than EVENT_RETENTION_DAYS, in batches."""
    return delivery.purge_delivered(current_app.config["EVENT_RETENTION_DAYS"])


@shared_task(name="workers.maintenance.purge_refresh_tokens", ignore_result=True)
def purge_refresh_tokens() -> int:
    """Delete refresh-token rows past their expiry (rotation leaves one per refresh)."""
    return sessions.purge_expired()
