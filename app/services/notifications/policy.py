"""The one decision per notification (store, push, email, digest): quiet hours and rate limit."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import RedisError
from sqlalchemy import func, select

from app.extensions import db
from app.models import Notification
from app.redis_client import get_redis
from app.services.notifications.preferences import Prefs
from app.services.notifications.sql import id_in

log = logging.getLogger(__name__)


def in_quiet_hours(prefs: Prefs, now: datetime) -> bool:
    """Is ``now`` inside the user's quiet hours, in their time zone? (22:00–07:00 wraps.)"""
    start, end = prefs.quiet_start, prefs.quiet_end
    if start is None or end is None or start == end:
        return False
    try:
        zone = ZoneInfo(prefs.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


@dataclass(frozen=True)
class Decision:
    """What happens to one notification for one user."""

    store: bool   # keep a row in the inbox at all (False: muted)
    push: bool    # emit it live to the user's /feed room now
    email: bool   # email it now
    digest: bool  # held back: list it in the next digest email
    reason: str


def should_notify(prefs: Prefs, *, type: str, priority: str, now: datetime,
                  over_rate_limit: bool = False) -> Decision:
    """The one place that decides store / push / email / digest for a notification.

    - A muted type (or one with no channels) is not stored; critical ones cannot be muted.
    - Quiet hours and the hourly rate limit hold back everything below critical: stored,
      not pushed or emailed, listed in the next digest (if the user takes digests).
    - Otherwise it goes to the type's channels: ``in_app`` is the live push (the row is
      always in the inbox), ``email`` an email now. Critical is always pushed live.
    """
    critical = priority == "critical"
    channels = prefs.channels_for(type)
    if not critical and (type in prefs.muted_types or not channels):
        return Decision(False, False, False, False, "muted")
    takes_digest = prefs.digest_frequency != "none"
    if not critical and in_quiet_hours(prefs, now):
        return Decision(True, False, False, takes_digest, "quiet_hours")
    if not critical and over_rate_limit:
        return Decision(True, False, False, takes_digest, "rate_limited")
    return Decision(True, critical or "in_app" in channels, "email" in channels, False, "send")


# ---- rate limit ----------------------------------------------------------------------------


RATE_WINDOW = timedelta(hours=1)


RATE_SCRIPT_BATCH = 1000  # users per rate-limit script call (one Redis round trip for all)


# Sliding window per user in a Redis sorted set (member = notification id, score = dispatch
# time). The script runs atomically in Redis, so every worker process agrees: a new member's
# position is the set's size right after adding it (arrival order, immune to clock skew
# between workers); a re-dispatched member (ZADD NX adds nothing) keeps its rank, so
# re-delivery neither counts twice nor changes the decision. One call handles a batch of
# users (KEYS[i] with member ARGV[i + 2]): a 10,000-user broadcast is ten calls in one
# pipelined round trip, not 10,000 round trips.
_RATE_SCRIPT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local positions = {}
for i, key in ipairs(KEYS) do
  local member = ARGV[i + 2]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local added = redis.call('ZADD', key, 'NX', now, member)
  redis.call('PEXPIRE', key, window + 60000)
  if added == 1 then
    positions[i] = redis.call('ZCARD', key)
  else
    positions[i] = redis.call('ZRANK', key, member) + 1
  end
end
return positions
"""


def rate_positions(items: Sequence[tuple[int, int]], now: datetime) -> dict[int, int]:
    """For each (notification id, user id): its position among the user's last hour.

    Redis when configured (shared by every process); otherwise the database counts the
    user's rows of the last hour up to this one (the ``user_id, created_at`` index serves it).
    """
    if not items:
        return {}
    client = get_redis()
    if client is not None:
        try:
            script = client.register_script(_RATE_SCRIPT)
            pipe = client.pipeline(transaction=False)
            now_ms, window_ms = int(now.timestamp() * 1000), int(RATE_WINDOW.total_seconds() * 1000)
            batches = [items[i:i + RATE_SCRIPT_BATCH] for i in range(0, len(items), RATE_SCRIPT_BATCH)]
            for batch in batches:
                script(keys=[f"ec:notif:rate:{uid}" for _, uid in batch],
                       args=[now_ms, window_ms, *(f"{nid:012d}" for nid, _ in batch)], client=pipe)
            positions: dict[int, int] = {}
            for batch, result in zip(batches, pipe.execute(), strict=True):
                positions.update({nid: int(pos) for (nid, _), pos in zip(batch, result, strict=True)})
            return positions
        except RedisError as exc:  # Redis away: count in the database rather than fail
            log.warning("rate limit via Redis failed, counting in the database: %s", exc)
    since = now - RATE_WINDOW
    inner = Notification.__table__.alias("earlier")
    position = (select(func.count()).select_from(inner)
                .where(inner.c.user_id == Notification.user_id, inner.c.created_at >= since,
                       inner.c.id <= Notification.id)
                .scalar_subquery())
    result: dict[int, int] = {}
    for condition in id_in(Notification.id, [nid for nid, _ in items]):
        query = select(Notification.id, position).where(condition)
        result.update({nid: count for nid, count in db.session.execute(query)})
    return result
