"""History for reconnecting clients: a shared buffer of recent emits, PostgreSQL behind it.

Events of ``NOT_REPLAYED`` (presence and viewers: state, not history) are left out.

After a deploy or a network blip every client reconnects at once with ``last_event_id``.
One outbox query each (up to 1,000 rows, plus their actors) is what a storm must not cost.
So the delivery step that emits an event also remembers it, envelope and routes as sent,
in a buffer every web process reads:

- with Redis, the sorted set ``ec:replay`` (score: event id; at most
  ``REPLAY_BUFFER_SIZE`` entries, the oldest dropped first) and ``ec:replay:floor``, the
  id above which the buffer holds every emitted event. The floor is set by the first
  write to an empty buffer (its lowest id − 1) and raised by every trim, both inside one
  Lua script, so the two never disagree; a Redis that lost the set (restart, eviction)
  lost the floor with it, or the read sees the set missing and does not trust the floor;
- without Redis (the embedded default: one process), the same in process memory.

A client at or above the floor is served from the buffer alone, in one round trip. Below
it, PostgreSQL answers (the delivered events after the id), unless the purge has deleted
history the client has not seen (``outbox_marks.purged_through``) or more than
``REPLAY_LIMIT`` events follow: then the answer is "resync", never a silent partial
history, and the client reloads over REST.
"""
from __future__ import annotations

import bisect
import json
import logging
import threading
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import func, select

from app.extensions import db
from app.models import DomainEvent, OutboxMark, User
from app.realtime.emit import history_entry
from app.redis_client import get_redis

log = logging.getLogger(__name__)

# Presence is state, not history: a reconnecting client gets the current viewers in its
# join ack and presence over REST. Replaying these would make a storm quadratic (each of N
# reconnects records a few, and each reconnecting client would replay the others'), and
# would push every client past REPLAY_LIMIT into a resync. They are neither buffered,
# replayed nor counted.
NOT_REPLAYED = frozenset({"viewer_joined", "viewer_left", "viewers_changed", "presence_changed"})

KEY = "ec:replay"
FLOOR_KEY = "ec:replay:floor"
PURGED_MARK = "purged_through"

# {"id", "name", "routes": [[namespace, room], ...], "envelope": {...}}, or for the pushes of
# one notification claim {"id", "name", "routes": [], "batch": {...}}: see emit.history_entry.
Entry = dict

# KEYS: the set, the floor. ARGV: cap, then id, member pairs.
_REMEMBER = """
local cap = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  local lowest = tonumber(ARGV[2])
  for i = 2, #ARGV, 2 do
    if tonumber(ARGV[i]) < lowest then lowest = tonumber(ARGV[i]) end
  end
  redis.call('SET', KEYS[2], lowest - 1)
end
for i = 2, #ARGV, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
local excess = redis.call('ZCARD', KEYS[1]) - cap
if excess > 0 then
  local dropped = redis.call('ZRANGE', KEYS[1], excess - 1, excess - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  if tonumber(dropped[2]) > tonumber(redis.call('GET', KEYS[2])) then
    redis.call('SET', KEYS[2], dropped[2])
  end
end
return 1
"""

# KEYS: the set, the floor. ARGV: the highest id purged from the outbox.
_FORGET = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[2])) then
    redis.call('SET', KEYS[2], ARGV[1])
  end
end
return 1
"""


@dataclass
class History:
    """What a reconnecting client gets: entries in id order, or a reason to resync."""

    entries: list[Entry] = field(default_factory=list)
    resync: str | None = None  # "history_purged" | "too_many_events"
    newest: int | None = None  # on resync: the newest id known, the client's new position
    source: str = "buffer"  # "buffer" | "database" (for tests and the benchmark)


class _LocalBuffer:
    """The buffer in process memory (no Redis: the embedded default is one process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[int] = []
        self.entries: dict[int, Entry] = {}
        self.floor: int | None = None

    def remember(self, entries: list[Entry], cap: int) -> None:
        with self.lock:
            if self.floor is None:
                self.floor = min(e["id"] for e in entries) - 1
            for entry in entries:
                if entry["id"] not in self.entries:
                    bisect.insort(self.ids, entry["id"])
                self.entries[entry["id"]] = entry
            excess = len(self.ids) - cap
            if excess > 0:
                dropped, self.ids = self.ids[:excess], self.ids[excess:]
                for event_id in dropped:
                    del self.entries[event_id]
                self.floor = max(self.floor, dropped[-1])

    def forget_through(self, event_id: int) -> None:
        with self.lock:
            if self.floor is None:
                return
            cut = bisect.bisect_right(self.ids, event_id)
            for dropped in self.ids[:cut]:
                del self.entries[dropped]
            self.ids = self.ids[cut:]
            self.floor = max(self.floor, event_id)

    def after(self, after_id: int, limit: int) -> tuple[int | None, list[Entry], int | None]:
        with self.lock:
            start = bisect.bisect_right(self.ids, after_id)
            found = [self.entries[i] for i in self.ids[start:start + limit]]
            return self.floor, found, (self.ids[-1] if self.ids else None)


_local = _LocalBuffer()


def reset_local() -> None:
    """A new app (and its database) starts with an empty in-process buffer."""
    global _local
    _local = _LocalBuffer()


def _cap() -> int:
    return max(1, int(current_app.config["REPLAY_BUFFER_SIZE"]))


def limit() -> int:
    return max(1, int(current_app.config["REPLAY_LIMIT"]))


def remember(entries: list[Entry]) -> None:
    """Delivery step: keep what was just emitted (``{"id", "name", "routes", "envelope"}``).

    Raises when Redis cannot take it, like the emit itself: the batch is then delivered
    (and remembered) again, instead of leaving the buffer silently short of an event.
    """
    entries = [entry for entry in entries if entry["name"] not in NOT_REPLAYED]
    if not entries or current_app.config["REPLAY_BUFFER_SIZE"] <= 0:
        return
    client = get_redis()
    if client is None:
        _local.remember(entries, _cap())
        return
    args: list = [_cap()]
    for entry in entries:
        args += [entry["id"], json.dumps(entry, separators=(",", ":"), default=str)]
    client.eval(_REMEMBER, 2, KEY, FLOOR_KEY, *args)


def forget_through(event_id: int) -> None:
    """The purge deleted every delivered event up to ``event_id``: so does the buffer."""
    client = get_redis()
    if client is None:
        _local.forget_through(event_id)
        return
    try:
        client.eval(_FORGET, 2, KEY, FLOOR_KEY, event_id)
    except Exception:  # noqa: BLE001 - the buffer then still holds real events; harmless
        log.warning("replay buffer not trimmed after the purge", exc_info=True)


def _from_buffer(after_id: int, wanted: int) -> tuple[bool, list[Entry], int | None]:
    """(usable, entries after ``after_id``, newest id in the buffer)."""
    if current_app.config["REPLAY_BUFFER_SIZE"] <= 0:
        return False, [], None
    client = get_redis()
    if client is None:
        floor, found, newest = _local.after(after_id, wanted)
        return floor is not None and after_id >= floor, found, newest
    try:
        floor, exists, members, top = (
            client.pipeline(transaction=True)
            .get(FLOOR_KEY).exists(KEY)
            .zrangebyscore(KEY, f"({after_id}", "+inf", start=0, num=wanted)
            .zrevrange(KEY, 0, 0, withscores=True).execute())
    except Exception:  # noqa: BLE001 - Redis trouble: PostgreSQL still has the history
        log.warning("replay buffer unreadable; replaying from the database", exc_info=True)
        return False, [], None
    if floor is None or not exists or after_id < int(floor):
        return False, [], None
    return True, [json.loads(m) for m in members], (int(top[0][1]) if top else None)


def history_after(after_id: int) -> History:
    """Every delivered event after ``after_id``, in id order, or a resync reason."""
    most = limit()
    usable, entries, newest = _from_buffer(after_id, most + 1)
    if usable:
        if len(entries) > most:
            return History(resync="too_many_events", newest=newest, source="buffer")
        return History(entries=entries, source="buffer")
    return _from_database(after_id, most)


def _from_database(after_id: int, most: int) -> History:
    purged = db.session.get(OutboxMark, PURGED_MARK)
    if purged is not None and after_id < purged.value:
        return History(resync="history_purged", newest=max(_newest_delivered() or 0, purged.value),
                       source="database")
    rows = list(db.session.scalars(
        select(DomainEvent)
        .where(DomainEvent.id > after_id, DomainEvent.delivered_at.is_not(None),
               DomainEvent.name.not_in(NOT_REPLAYED))
        .order_by(DomainEvent.id).limit(most + 1)))
    if len(rows) > most:
        return History(resync="too_many_events", newest=max(_newest_delivered() or 0, after_id),
                       source="database")
    actor_ids = {r.actor_id for r in rows if r.actor_id}
    actors = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(actor_ids)))} \
        if actor_ids else {}
    entries = [history_entry(r, actors.get(r.actor_id)) for r in rows]
    return History(entries=entries, source="database")


def _newest_delivered() -> int | None:
    return db.session.scalar(select(func.max(DomainEvent.id)).where(
        DomainEvent.delivered_at.is_not(None), DomainEvent.name.not_in(NOT_REPLAYED)))


def mark_purged(through_id: int) -> None:
    """Record, in the purge's own transaction, that events up to this id may be gone."""
    mark = db.session.get(OutboxMark, PURGED_MARK, with_for_update=True)
    if mark is None:
        db.session.add(OutboxMark(name=PURGED_MARK, value=through_id))
    elif through_id > mark.value:
        mark.value = through_id
