"""Retention sweeps (beat): expired notifications and old read ones, in batches."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app

from app.models import Notification, utcnow
from app.services.notifications.sql import delete_in_batches


def delete_expired(*, now: datetime | None = None, batch: int | None = None) -> int:
    """Beat: delete notifications past ``expires_at``."""
    now = now or utcnow()
    return delete_in_batches(Notification.expires_at <= now,
                              batch or current_app.config["NOTIFICATION_SWEEP_BATCH"])


def delete_old_read(*, days: int | None = None, now: datetime | None = None,
                    batch: int | None = None) -> int:
    """Beat: delete notifications read more than ``NOTIFICATION_RETENTION_DAYS`` ago."""
    now = now or utcnow()
    days = days if days is not None else current_app.config["NOTIFICATION_RETENTION_DAYS"]
    return delete_in_batches(Notification.read_at < now - timedelta(days=days),
                              batch or current_app.config["NOTIFICATION_SWEEP_BATCH"])
