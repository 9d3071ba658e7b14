"""Notification tasks: emails, scheduled delivery, digests and the sweeps (beat)."""
from __future__ import annotations

import smtplib

from celery import shared_task

from app.services import notifications


@shared_task(name="workers.notifications.send_emails", ignore_result=True,
             autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=30,
             retry_backoff_max=600, max_retries=5)
def send_emails(notification_ids: list[int]) -> int:
    """Email these notifications; an unreachable SMTP server is retried with backoff."""
    return notifications.send_emails(notification_ids)


@shared_task(name="workers.notifications.dispatch_range", ignore_result=True, acks_late=True,
             autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def dispatch_range(first_id: int, last_id: int) -> int:
    """Push one id range of a large fan-out; rows already delivered are skipped (idempotent)."""
    return notifications.dispatch_ids(first_id, last_id).total


@shared_task(name="workers.notifications.deliver_scheduled", ignore_result=True)
def deliver_scheduled() -> int:
    """Beat: push scheduled notifications whose deliver_at has come, and any push missed."""
    return notifications.deliver_due()


@shared_task(name="workers.notifications.send_digests", ignore_result=True)
def send_digests() -> int:
    """Beat: the hourly/daily/weekly digest emails of users whose period has passed."""
    return notifications.send_digests()


@shared_task(name="workers.notifications.delete_expired", ignore_result=True)
def delete_expired() -> int:
    """Beat: delete notifications past their expiry, in batches."""
    return notifications.delete_expired()


@shared_task(name="workers.notifications.delete_old_read", ignore_result=True)
def delete_old_read() -> int:
    """Beat: delete read notifications older than NOTIFICATION_RETENTION_DAYS, in batches."""
    return notifications.delete_old_read()
