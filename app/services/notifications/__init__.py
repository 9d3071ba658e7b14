"""Notifications: rows from events, preferences, live pushes, email, digests and the inbox.

One module per responsibility, in the order a notification lives through them:

- ``catalog``: the types, one table (templates, default priority, TTL, channels);
- ``rules``: which domain events notify whom; ``fanout``: the rows a batch of events
  creates, in the event-delivery transaction (unique on ``(user_id, event_id)``, so
  re-delivery inserts nothing); an admin ``send`` is a domain event too (``send``);
- ``preferences`` and ``policy``: the one decision per row (muted, quiet hours, rate
  limit, channels); every decision is noted through ``decisions.note``;
- ``push``: once committed and due, each row is pushed live on ``/feed``, emailed
  (``emails``) or held for the digest; scheduled rows wait for the beat;
- ``inbox``: the caller's own rows, read and deleted; ``retention``: beat sweeps.
Shared SQL helpers are in ``sql``. The names below are the package's public face.
"""
from __future__ import annotations

from app.services.notifications.catalog import (
    CATALOG,
    CHANNELS,
    DEFAULT_CHANNELS,
    DEFAULT_EXPIRY,
    TEMPLATES,
    TYPES,
    Kind,
    TemplateError,
    render,
    template_fields,
)
from app.services.notifications.emails import send_digests, send_emails
from app.services.notifications.fanout import BROADCAST_EVENT, RULE_EVENTS, create_for_events
from app.services.notifications.inbox import (
    delete_notification,
    get_notification,
    inbox_query,
    mark_all_read,
    mark_read,
    stats,
    unread_badge,
    unread_count,
)
from app.services.notifications.policy import (
    RATE_WINDOW,
    Decision,
    in_quiet_hours,
    rate_positions,
    should_notify,
)
from app.services.notifications.preferences import (
    DIGEST_PERIODS,
    Prefs,
    get_preferences,
    load_prefs,
    parse_hhmm,
    update_preferences,
    valid_timezone,
)
from app.services.notifications.push import (
    DispatchResult,
    deliver_due,
    dispatch,
    dispatch_ids,
    notification_payload,
    push_for_event,
    push_for_events,
)
from app.services.notifications.retention import delete_expired, delete_old_read
from app.services.notifications.send import alert_admins, send
from app.services.notifications.sql import MAX_ID, due, id_in

__all__ = [
    "BROADCAST_EVENT", "CATALOG", "CHANNELS", "DEFAULT_CHANNELS", "DEFAULT_EXPIRY",
    "DIGEST_PERIODS", "MAX_ID", "RATE_WINDOW", "RULE_EVENTS", "TEMPLATES", "TYPES", "Decision",
    "DispatchResult", "Kind", "Prefs", "TemplateError", "alert_admins", "create_for_events",
    "delete_expired", "delete_notification", "delete_old_read", "deliver_due", "dispatch",
    "dispatch_ids", "due", "get_notification", "get_preferences", "id_in", "in_quiet_hours",
    "inbox_query", "load_prefs", "mark_all_read", "mark_read", "notification_payload",
    "parse_hhmm", "push_for_event", "push_for_events", "rate_positions", "render", "send",
    "send_digests", "send_emails", "should_notify", "stats", "template_fields",
    "unread_badge", "unread_count", "update_preferences", "valid_timezone",
]
