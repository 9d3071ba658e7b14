"""Email: notifications sent by mail now, and the digests of what quiet hours held back."""
from __future__ import annotations

import logging
from datetime import datetime

from flask import current_app
from sqlalchemy import and_, func, or_, select, update

from app import tasks
from app.extensions import db
from app.models import Notification, NotificationPreference, User, utcnow
from app.services import mail
from app.services.notifications import decisions
from app.services.notifications.preferences import DIGEST_PERIODS
from app.services.notifications.sql import due
from app.services.transaction import atomic

log = logging.getLogger(__name__)


def enqueue_emails(ids: list[int]) -> None:
    """Email these rows from a worker, 200 per task (the request or delivery never waits on SMTP)."""
    for start in range(0, len(ids), 200):
        try:
            tasks.enqueue("workers.notifications.send_emails", ids[start:start + 200])
        except Exception as exc:  # noqa: BLE001 - broker down: the inbox row remains
            log.warning("could not enqueue notification emails: %s", exc)


def send_emails(ids: list[int]) -> int:
    """Email these notifications to their users (one SMTP connection); returns sent count."""
    if not ids or not mail.enabled():
        return 0
    query = (select(Notification, User.email).join(User, User.id == Notification.user_id)
             .where(Notification.id.in_(ids), User.is_active.is_(True)))
    found = list(db.session.execute(query))
    rows = [n for n, _email in found]
    mails = [mail.Mail(to=email, subject=f"[Episode Control] {n.title}",
                       body=f"{n.message}\n\n(priority: {n.priority}, type: {n.type})\n")
             for n, email in found]
    db.session.rollback()  # release the read transaction before the slow SMTP part
    try:
        sent = mail.send(mails)
    except Exception as exc:
        with atomic():  # the decisions are rows of the timeline: written in their own unit
            decisions.note_many(decisions.Note(n.user_id, n.event_id, decisions.EMAIL_FAILED,
                                               type(exc).__name__, {"notification_id": n.id,
                                                                    "error": str(exc)[:500]})
                                for n in rows)
        raise
    with atomic():
        decisions.note_many(decisions.Note(n.user_id, n.event_id, decisions.EMAILED, "channel",
                                           {"notification_id": n.id}) for n in rows)
    return sent


# ---- digests -----------------------------------------------------------------------------------


def _digest_mail(user: User, items: list[Notification], total: int) -> mail.Mail:
    lines = [f"Hello {user.name},", "", f"While you were away: {total} notification(s).", ""]
    for item in items:
        when = item.created_at.strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"- [{item.priority}] {item.title} ({when})")
        if item.message:
            lines.append(f"  {item.message}")
    if total > len(items):
        lines.append(f"... and {total - len(items)} more in your inbox.")
    return mail.Mail(to=user.email, subject=f"[Episode Control] Your digest: {total} notification(s)",
                     body="\n".join(lines) + "\n")


def send_digests(*, now: datetime | None = None) -> int:
    """Beat: one email per user whose digest period has passed, listing what they missed.

    Missed = held back (quiet hours, rate limit), still unread and not expired. A user is
    claimed by a compare-and-set on ``last_digest_at`` so two runs never mail twice; a
    failed send gives the claim back.
    """
    if not mail.enabled():
        return 0
    now = now or utcnow()
    max_items = current_app.config["NOTIFICATION_DIGEST_MAX_ITEMS"]
    pending_users = select(Notification.user_id).where(Notification.digest_pending.is_(True))
    candidates = list(db.session.execute(
        select(NotificationPreference.id, NotificationPreference.user_id,
               NotificationPreference.digest_frequency, NotificationPreference.last_digest_at)
        .where(NotificationPreference.digest_frequency != "none",
               NotificationPreference.user_id.in_(pending_users))
        .order_by(NotificationPreference.user_id)))
    db.session.rollback()
    sent = 0
    for pref in candidates:
        period = DIGEST_PERIODS.get(pref.digest_frequency)
        if period is None or (pref.last_digest_at is not None and pref.last_digest_at > now - period):
            continue
        previous = pref.last_digest_at
        claim = (update(NotificationPreference)
                 .where(NotificationPreference.id == pref.id,
                        or_(NotificationPreference.last_digest_at.is_(None),
                            NotificationPreference.last_digest_at <= now - period))
                 .values(last_digest_at=now).execution_options(synchronize_session=False))
        with atomic():
            claimed = db.session.execute(claim).rowcount == 1
        if not claimed:
            continue
        pending = and_(Notification.user_id == pref.user_id, Notification.digest_pending.is_(True))
        visible_unread = and_(pending, Notification.read_at.is_(None), due(now))
        items = list(db.session.scalars(select(Notification).where(visible_unread)
                                        .order_by(Notification.id).limit(max_items)))
        total = db.session.scalar(select(func.count()).select_from(Notification)
                                  .where(visible_unread)) or 0
        max_id = db.session.scalar(select(func.max(Notification.id)).where(pending)) or 0
        user = db.session.get(User, pref.user_id)
        mailed = 0
        try:
            if items and user is not None and user.is_active:
                mailed = mail.send([_digest_mail(user, items, total)])
        except Exception as exc:
            db.session.rollback()
            decisions.note(pref.user_id, None, decisions.EMAIL_FAILED, f"digest: {type(exc).__name__}")
            _set_last_digest(pref.id, previous)  # the SMTP server is away: try next time
            raise
        if mailed:
            # One decision per listed notification, so each one's timeline shows the digest.
            decisions.note_many(decisions.Note(item.user_id, item.event_id, decisions.DIGEST_SENT,
                                               pref.digest_frequency,
                                               {"notification_id": item.id, "total": total})
                                for item in items)
        else:  # nothing left worth mailing: the period runs from the last real digest
            _set_last_digest(pref.id, previous)
        with atomic():
            db.session.execute(update(Notification).where(pending, Notification.id <= max_id)
                               .values(digest_pending=False)
                               .execution_options(synchronize_session=False))
        sent += mailed
    return sent


def _set_last_digest(pref_id: int, value: datetime | None) -> None:
    with atomic():
        db.session.execute(update(NotificationPreference).where(NotificationPreference.id == pref_id)
                           .values(last_digest_at=value).execution_options(synchronize_session=False))
