"""The choke point every notification decision passes through, with its reason.

Why one place: "why did (or didn't) Ada get told about event 42?" is answered by reading
what passed here: which rule matched or not, muted by preference, quiet hours, rate
limit, digest, channels, pushed, emailed or failed. :func:`note_many` writes them to the
delivery timeline (``notification_decisions``, one INSERT per call, in the caller's
transaction: a rolled-back delivery leaves no decisions) counts the outcomes
Prometheus exports once they commit, and logs them at debug.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from flask import has_app_context

from app import metrics
from app.extensions import db
from app.services import timeline
from app.services.transaction import collect_on_commit

log = logging.getLogger(__name__)

# Outcomes (the reason says which rule, preference or limit).
RULE_MATCHED = "rule_matched"
RULE_SKIPPED = "rule_skipped"      # the rule's condition, the actor, or an earlier rule
MUTED = "muted"                    # preference: type muted or no channel; not stored
CREATED = "created"                # stored in the inbox
CHANNELS = "channels"              # the channels the user's preferences give this type
PUSHED = "pushed"                  # live to the user's /feed room (an outbox event)
EMAIL_QUEUED = "email_queued"      # an email task enqueued once the decision commits
QUIET_HOURS = "quiet_hours"        # held back, not pushed
RATE_LIMITED = "rate_limited"      # held back, not pushed
DIGEST = "digest"                  # listed in the next digest email
EMAILED = "emailed"
EMAIL_FAILED = "email_failed"
DIGEST_SENT = "digest_sent"
DROPPED = "dropped"                # decided, with nothing to do (no channel now)


class Note(NamedTuple):
    """One decision about one user (None: about the event as a whole) and one event."""

    user_id: int | None
    event_id: int | None
    outcome: str
    reason: str
    details: dict[str, Any]


def note(user_id: int | None, event_id: int | None, outcome: str, reason: str = "",
         **details: Any) -> None:
    """Record one decision (see :func:`note_many`)."""
    note_many([Note(user_id, event_id, outcome, reason, details)])


def note_many(notes: Iterable[Note]) -> None:
    """Record decisions, many at once (a broadcast decides for thousands of users)."""
    notes = list(notes)
    timeline.note_decisions(notes)
    counted = [n.outcome for n in notes if n.outcome in metrics.NOTIFICATION_OUTCOMES]
    if counted and has_app_context():
        # Counted when the decision commits: a rolled-back dispatch decided nothing.
        collect_on_commit(db.session(), "ec_decisions", _count).extend(counted)
    if not log.isEnabledFor(logging.DEBUG):
        return
    for item in notes:
        log.debug("notification decision user=%s event=%s %s (%s) %s", item.user_id,
                  item.event_id, item.outcome, item.reason, item.details)


def _count(outcomes: list[str]) -> None:
    for outcome, n in Counter(outcomes).items():
        metrics.notification_decision(outcome, n)
