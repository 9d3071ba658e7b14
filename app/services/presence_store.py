"""Ephemeral presence: sockets with a TTL, users aggregated over their sockets, viewers.

Everything that changes on a connect, join, heartbeat or disconnect lives here, never in
PostgreSQL: in Redis when REDIS_URL is set (shared by every web process), else in this
process's memory (the embedded default is one process). Both backends have the same
operations and the same semantics; every operation is atomic (one Lua script on Redis, one
lock in memory), so "last socket gone → offline" cannot race a new connect without any
row lock.

Layout (Redis, prefix ``ec:presence:``), after Centrifugo's presence (a hash of entries plus
a sorted set scored by expiry, expired members popped by score):

- ``socks``   hash   sid → "user_id\\tnamespace\\tserver_id\\tresource" (resource "" = none)
- ``exp``     zset   sid scored by its expiry (epoch seconds); heartbeats and each web
  process's refresh push it forward; ``pop_expired`` takes what is past it
- ``us:<uid>`` set   the user's sids (their status is aggregated over these)
- ``online``  set    users with at least one socket
- ``vc:<res>`` hash  user_id → how many of the user's sockets view the resource
- ``vz:<res>`` zset  the *visible* viewers (members are zero-padded ids, so lexicographic
  order is id order and the first page is a ZRANGE, the count a ZCARD)
- ``names``, ``chosen``, ``act`` hashes: user_id → name, chosen status (a cache of
  ``user_presence.chosen_status``), last activity (epoch seconds)
- ``cnt``     hash   sockets per namespace (``ns:/feed``) and sockets viewing (``viewing``)

A user whose chosen status is ``offline`` (invisible) keeps sockets and counts but is never
in a ``vz`` set: viewers, counts and the online list never show them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import current_app

from app.redis_client import get_redis

PREFIX = "ec:presence:"
INVISIBLE = "offline"


@dataclass
class Removed:
    """A socket removed from presence and what others must hear about."""

    sid: str
    user_id: int
    resource: str  # "" when it viewed nothing
    left_resource: bool  # the user's last visible socket on that resource
    went_offline: bool  # the user's last socket, and the user was visible


@dataclass
class Viewed:
    user_id: int
    previous: str
    left_previous: bool
    joined: bool
    count: int
    first_page: list  # [{"id", "name"}] of the new resource's visible viewers, by id


def resource_key(resource_type: str, resource_id: int) -> str:
    return f"{resource_type}:{resource_id}"


def split_resource(resource: str) -> tuple[str, int]:
    kind, _, ident = resource.partition(":")
    return kind, int(ident)


_LUA_PRELUDE = r"""
local P = ARGV[1]
local function pad(uid) return string.format('%012d', tonumber(uid)) end
local function visible(uid) return redis.call('HGET', P..'chosen', uid) ~= 'offline' end
local function parse(v)
  return string.match(v, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$')
end
local function leave_res(uid, res)
  local n = redis.call('HINCRBY', P..'vc:'..res, uid, -1)
  redis.call('HINCRBY', P..'cnt', 'viewing', -1)
  if n <= 0 then
    redis.call('HDEL', P..'vc:'..res, uid)
    return redis.call('ZREM', P..'vz:'..res, pad(uid))
  end
  return 0
end
local function join_res(uid, res)
  local n = redis.call('HINCRBY', P..'vc:'..res, uid, 1)
  redis.call('HINCRBY', P..'cnt', 'viewing', 1)
  if n == 1 and visible(uid) then
    return redis.call('ZADD', P..'vz:'..res, 0, pad(uid))
  end
  return 0
end
local function remove(sid)
  redis.call('ZREM', P..'exp', sid)
  local v = redis.call('HGET', P..'socks', sid)
  if not v then return false end
  redis.call('HDEL', P..'socks', sid)
  local uid, ns, server, res = parse(v)
  local left = 0
  if res ~= '' then left = leave_res(uid, res) end
  redis.call('HINCRBY', P..'cnt', 'ns:'..ns, -1)
  redis.call('SREM', P..'us:'..uid, sid)
  local offline = 0
  if redis.call('SCARD', P..'us:'..uid) == 0 then
    redis.call('SREM', P..'online', uid)
    if visible(uid) then offline = 1 end
  end
  return {sid, uid, res, left, offline}
end
"""

# ARGV: prefix, sid, uid, name, namespace, server, expires_at, cap, now
_LUA_CONNECT = _LUA_PRELUDE + r"""
local sid, uid, now = ARGV[2], ARGV[3], tonumber(ARGV[9])
local cap = tonumber(ARGV[8])
local key = P..'us:'..uid
if cap > 0 and redis.call('SISMEMBER', key, sid) == 0 then
  local live = 0
  for _, other in ipairs(redis.call('SMEMBERS', key)) do
    local exp = redis.call('ZSCORE', P..'exp', other)
    if exp and tonumber(exp) >= now then live = live + 1 end
  end
  if live >= cap then return {-1, 0, false, false} end
end
if redis.call('HEXISTS', P..'socks', sid) == 1 then remove(sid) end
redis.call('HSET', P..'socks', sid, uid..'\t'..ARGV[5]..'\t'..ARGV[6]..'\t')
redis.call('ZADD', P..'exp', ARGV[7], sid)
redis.call('SADD', key, sid)
redis.call('HSET', P..'names', uid, ARGV[4])
redis.call('HSET', P..'act', uid, ARGV[9])
redis.call('HINCRBY', P..'cnt', 'ns:'..ARGV[5], 1)
local shown = 0
if redis.call('SADD', P..'online', uid) == 1 and visible(uid) then shown = 1 end
return {1, shown, redis.call('HGET', P..'chosen', uid), redis.call('HGET', P..'msg', uid)}
"""

# ARGV: prefix, sid, new resource ("" = none), now, expected current ("" = any), page size
# → {uid, previous, left previous, joined, count, id1, name1, ...} (the first page)
_LUA_VIEW = _LUA_PRELUDE + r"""
local sid, res, expect = ARGV[2], ARGV[3], ARGV[5]
local v = redis.call('HGET', P..'socks', sid)
if not v then return false end
local uid, ns, server, old = parse(v)
if expect ~= '' and old ~= expect then return false end
local left, joined = 0, 0
if old ~= res then
  if old ~= '' then left = leave_res(uid, old) end
  if res ~= '' then joined = join_res(uid, res) end
  redis.call('HSET', P..'socks', sid, uid..'\t'..ns..'\t'..server..'\t'..res)
end
redis.call('HSET', P..'act', uid, ARGV[4])
local out = {uid, old, left, joined, 0}
if res ~= '' then
  out[5] = redis.call('ZCARD', P..'vz:'..res)
  for _, m in ipairs(redis.call('ZRANGE', P..'vz:'..res, 0, tonumber(ARGV[6]) - 1)) do
    local id = tostring(tonumber(m))
    table.insert(out, id)
    table.insert(out, redis.call('HGET', P..'names', id) or '')
  end
end
return out
"""

# ARGV: prefix, sids...
_LUA_DISCONNECT = _LUA_PRELUDE + r"""
local out = {}
for i = 2, #ARGV do
  local r = remove(ARGV[i])
  if r then table.insert(out, r) end
end
return out
"""

# ARGV: prefix, now, limit
_LUA_POP_EXPIRED = _LUA_PRELUDE + r"""
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P..'exp', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local r = remove(sid)
  if r then table.insert(out, r) end
end
return out
"""

# ARGV: prefix, expires_at, now, activity user id ("" = none), sids...  → sids not present
_LUA_TOUCH = r"""
local P = ARGV[1]
local missing = {}
for i = 5, #ARGV do
  if redis.call('ZADD', P..'exp', 'XX', 'CH', ARGV[2], ARGV[i]) == 0
     and not redis.call('ZSCORE', P..'exp', ARGV[i]) then
    table.insert(missing, ARGV[i])
  end
end
if ARGV[4] ~= '' then redis.call('HSET', P..'act', ARGV[4], ARGV[3]) end
return missing
"""

# ARGV: prefix, uid, status  → {sockets, joined resources, left resources}
_LUA_SET_CHOSEN = _LUA_PRELUDE + r"""
local uid, status = ARGV[2], ARGV[3]
local was = visible(uid)
redis.call('HSET', P..'chosen', uid, status)
local now = status ~= 'offline'
local sids = redis.call('SMEMBERS', P..'us:'..uid)
local joined, left, seen = {}, {}, {}
if was ~= now then
  for _, sid in ipairs(sids) do
    local v = redis.call('HGET', P..'socks', sid)
    if v then
      local _, _, _, res = parse(v)
      if res ~= '' and not seen[res] then
        seen[res] = true
        if now then
          if redis.call('ZADD', P..'vz:'..res, 0, pad(uid)) == 1 then table.insert(joined, res) end
        else
          if redis.call('ZREM', P..'vz:'..res, pad(uid)) == 1 then table.insert(left, res) end
        end
      end
    end
  end
end
return {#sids, joined, left}
"""

# ARGV: prefix, resource, limit → {count, id1, name1, id2, name2, ...}
_LUA_VIEWERS = r"""
local P, res = ARGV[1], ARGV[2]
local out = {redis.call('ZCARD', P..'vz:'..res)}
for _, m in ipairs(redis.call('ZRANGE', P..'vz:'..res, 0, tonumber(ARGV[3]) - 1)) do
  local uid = tostring(tonumber(m))
  table.insert(out, uid)
  table.insert(out, redis.call('HGET', P..'names', uid) or '')
end
return out
"""


def _removed(rows) -> list[Removed]:
    return [Removed(str(sid), int(uid), res or "", bool(int(left)), bool(int(off)))
            for sid, uid, res, left, off in rows]


class RedisPresenceStore:
    """Presence in Redis: one Lua script per operation, so each is atomic and one round trip."""

    def __init__(self, client, prefix: str = PREFIX):
        self.r = client
        self.p = prefix
        self._scripts = {name: client.register_script(src) for name, src in (
            ("connect", _LUA_CONNECT), ("view", _LUA_VIEW), ("disconnect", _LUA_DISCONNECT),
            ("pop", _LUA_POP_EXPIRED), ("touch", _LUA_TOUCH), ("chosen", _LUA_SET_CHOSEN),
            ("viewers", _LUA_VIEWERS))}

    def _run(self, name: str, *args) -> object:
        return self._scripts[name](keys=[], args=[self.p, *args])

    def get_chosen(self, user_id: int) -> tuple[str, str | None] | None:
        """(chosen status, message) cached from PostgreSQL; None when not cached yet."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.p + "chosen", user_id)
        pipe.hget(self.p + "msg", user_id)
        status, message = pipe.execute()
        return None if status is None else (status, message or None)

    def prime_chosen(self, user_id: int, status: str, message: str | None) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hsetnx(self.p + "chosen", user_id, status)
        pipe.hsetnx(self.p + "msg", user_id, message or "")
        pipe.execute()

    def set_message(self, user_id: int, message: str | None) -> None:
        self.r.hset(self.p + "msg", user_id, message or "")

    def names_of(self, user_ids: list[int]) -> dict[int, str]:
        if not user_ids:
            return {}
        return dict(zip(user_ids, self.r.hmget(self.p + "names", user_ids), strict=True))

    def connect(self, *, sid: str, user_id: int, name: str, namespace: str, server_id: str,
                expires_at: float, cap: int, now: float) -> tuple[bool, bool, tuple | None]:
        """(accepted, the user came online visibly, cached (chosen, message) or None)."""
        ok, shown, chosen, message = self._run("connect", sid, user_id, name, namespace,
                                               server_id, repr(expires_at), cap, repr(now))
        return int(ok) == 1, bool(int(shown)), (chosen, message or None) if chosen else None

    def view(self, sid: str, resource: str, *, now: float, expect: str = "",
             page: int = 0) -> Viewed | None:
        got = self._run("view", sid, resource, repr(now), expect, page)
        if not got:
            return None
        uid, old, left, joined, count, *pairs = got
        return Viewed(int(uid), old or "", bool(int(left)), bool(int(joined)), int(count),
                      [{"id": int(pairs[i]), "name": pairs[i + 1]} for i in range(0, len(pairs), 2)])

    def disconnect(self, sids: list[str]) -> list[Removed]:
        out: list[Removed] = []
        for i in range(0, len(sids), 500):
            out += _removed(self._run("disconnect", *sids[i:i + 500]))
        return out

    def pop_expired(self, now: float, limit: int = 1000) -> list[Removed]:
        return _removed(self._run("pop", repr(now), limit))

    def touch(self, sids: list[str], *, expires_at: float, now: float,
              activity_user: int | None = None) -> list[str]:
        missing: list[str] = []
        for i in range(0, max(len(sids), 1), 1000):
            missing += self._run("touch", repr(expires_at), repr(now),
                                 "" if activity_user is None else activity_user, *sids[i:i + 1000])
        return [str(s) for s in missing]

    def set_chosen(self, user_id: int, status: str) -> tuple[int, list[str], list[str]]:
        sockets, joined, left = self._run("chosen", user_id, status)
        return int(sockets), list(joined), list(left)

    def viewers(self, resource: str, limit: int) -> tuple[int, list[dict]]:
        got = self._run("viewers", resource, limit)
        pairs = got[1:]
        return int(got[0]), [{"id": int(pairs[i]), "name": pairs[i + 1]}
                             for i in range(0, len(pairs), 2)]

    def user_state(self, user_id: int, now: float) -> dict:
        pipe = self.r.pipeline(transaction=False)
        pipe.smembers(f"{self.p}us:{user_id}")
        pipe.hget(self.p + "act", user_id)
        sids, act = pipe.execute()
        resources: list[str] = []
        sids = sorted(sids)
        if sids:
            pipe = self.r.pipeline(transaction=False)
            pipe.hmget(self.p + "socks", sids)
            for sid in sids:
                pipe.zscore(self.p + "exp", sid)
            values, *expiries = pipe.execute()
            live = [v for v, e in zip(values, expiries, strict=True) if v and e is not None and e >= now]
            resources = sorted({v.split("\t")[3] for v in live} - {""})
            sids = live
        return {"sockets": len(sids), "resources": resources,
                "last_activity": float(act) if act else None}

    def last_activity(self, user_ids: list[int]) -> dict[int, float]:
        if not user_ids:
            return {}
        values = self.r.hmget(self.p + "act", user_ids)
        return {uid: float(v) for uid, v in zip(user_ids, values, strict=True) if v}

    def online_user_ids(self) -> list[int]:
        """Users with a socket and not invisible."""
        ids = sorted(int(u) for u in self.r.smembers(self.p + "online"))
        if not ids:
            return []
        chosen = self.r.hmget(self.p + "chosen", ids)
        return [uid for uid, c in zip(ids, chosen, strict=True) if c != INVISIBLE]

    def chosen_of(self, user_ids: list[int]) -> dict[int, str]:
        if not user_ids:
            return {}
        values = self.r.hmget(self.p + "chosen", user_ids)
        return {uid: v for uid, v in zip(user_ids, values, strict=True) if v}

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.p + "cnt").items()}

    def sockets_of(self, user_id: int) -> list[dict]:
        """Every socket of the user on any web process (e.g. to end a session's sockets)."""
        sids = sorted(self.r.smembers(f"{self.p}us:{user_id}"))
        if not sids:
            return []
        values = self.r.hmget(self.p + "socks", sids)
        return [self._entry(sid, v) for sid, v in zip(sids, values, strict=True) if v]

    @staticmethod
    def _entry(sid: str, value: str) -> dict:
        uid, namespace, server, resource = value.split("\t")
        return {"sid": sid, "user_id": int(uid), "namespace": namespace, "server_id": server,
                "resource": resource}

    def socket(self, sid: str) -> dict | None:
        value = self.r.hget(self.p + "socks", sid)
        return self._entry(sid, value) if value else None


class MemoryPresenceStore:
    """The same operations in this process's memory, under one lock (embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.socks: dict[str, list] = {}  # sid → [uid, namespace, server, resource]
        self.exp: dict[str, float] = {}
        self.user_sids: dict[int, set[str]] = {}
        self.view_counts: dict[str, dict[int, int]] = {}
        self.visible_viewers: dict[str, set[int]] = {}
        self.names: dict[int, str] = {}
        self.chosen: dict[int, str] = {}
        self.messages: dict[int, str | None] = {}
        self.act: dict[int, float] = {}
        self.cnt: dict[str, int] = {}

    def _visible(self, uid: int) -> bool:
        return self.chosen.get(uid) != INVISIBLE

    def _bump(self, key: str, by: int) -> None:
        self.cnt[key] = self.cnt.get(key, 0) + by

    def _leave(self, uid: int, res: str) -> bool:
        counts = self.view_counts.setdefault(res, {})
        counts[uid] = counts.get(uid, 0) - 1
        self._bump("viewing", -1)
        if counts[uid] > 0:
            return False
        del counts[uid]
        if not counts:
            self.view_counts.pop(res, None)
        viewers = self.visible_viewers.get(res, set())
        was = uid in viewers
        viewers.discard(uid)
        if not viewers:
            self.visible_viewers.pop(res, None)
        return was

    def _join(self, uid: int, res: str) -> bool:
        counts = self.view_counts.setdefault(res, {})
        counts[uid] = counts.get(uid, 0) + 1
        self._bump("viewing", 1)
        if counts[uid] == 1 and self._visible(uid):
            viewers = self.visible_viewers.setdefault(res, set())
            if uid not in viewers:
                viewers.add(uid)
                return True
        return False

    def _remove(self, sid: str) -> Removed | None:
        self.exp.pop(sid, None)
        entry = self.socks.pop(sid, None)
        if entry is None:
            return None
        uid, namespace, _server, res = entry
        left = self._leave(uid, res) if res else False
        self._bump(f"ns:{namespace}", -1)
        sids = self.user_sids.get(uid, set())
        sids.discard(sid)
        offline = False
        if not sids:
            self.user_sids.pop(uid, None)
            offline = self._visible(uid)
        return Removed(sid, uid, res, left, offline)

    def get_chosen(self, user_id: int) -> tuple[str, str | None] | None:
        status = self.chosen.get(user_id)
        return None if status is None else (status, self.messages.get(user_id))

    def prime_chosen(self, user_id: int, status: str, message: str | None) -> None:
        with self._lock:
            self.chosen.setdefault(user_id, status)
            self.messages.setdefault(user_id, message)

    def set_message(self, user_id: int, message: str | None) -> None:
        self.messages[user_id] = message

    def names_of(self, user_ids: list[int]) -> dict[int, str]:
        return {uid: self.names.get(uid, "") for uid in user_ids}

    def connect(self, *, sid: str, user_id: int, name: str, namespace: str, server_id: str,
                expires_at: float, cap: int, now: float) -> tuple[bool, bool, tuple | None]:
        with self._lock:
            sids = self.user_sids.get(user_id, set())
            if cap > 0 and sid not in sids and sum(
                    1 for s in sids if self.exp.get(s, 0) >= now) >= cap:
                return False, False, None
            if sid in self.socks:
                self._remove(sid)
            first = user_id not in self.user_sids
            self.socks[sid] = [user_id, namespace, server_id, ""]
            self.exp[sid] = expires_at
            self.user_sids.setdefault(user_id, set()).add(sid)
            self.names[user_id] = name
            self.act[user_id] = now
            self._bump(f"ns:{namespace}", 1)
            chosen = self.chosen.get(user_id)
            return (True, first and self._visible(user_id),
                    (chosen, self.messages.get(user_id)) if chosen else None)

    def view(self, sid: str, resource: str, *, now: float, expect: str = "",
             page: int = 0) -> Viewed | None:
        with self._lock:
            entry = self.socks.get(sid)
            if entry is None or (expect and entry[3] != expect):
                return None
            uid, old = entry[0], entry[3]
            left = joined = False
            if old != resource:
                left = self._leave(uid, old) if old else False
                joined = self._join(uid, resource) if resource else False
                entry[3] = resource
            self.act[uid] = now
            ids = sorted(self.visible_viewers.get(resource, ())) if resource else []
            return Viewed(uid, old, left, joined, len(ids),
                          [{"id": i, "name": self.names.get(i, "")} for i in ids[:page]])

    def disconnect(self, sids: list[str]) -> list[Removed]:
        with self._lock:
            return [r for r in map(self._remove, sids) if r is not None]

    def pop_expired(self, now: float, limit: int = 1000) -> list[Removed]:
        with self._lock:
            expired = sorted((e, s) for s, e in self.exp.items() if e <= now)[:limit]
            return [r for r in (self._remove(s) for _, s in expired) if r is not None]

    def touch(self, sids: list[str], *, expires_at: float, now: float,
              activity_user: int | None = None) -> list[str]:
        with self._lock:
            missing = []
            for sid in sids:
                if sid in self.exp:
                    self.exp[sid] = expires_at
                else:
                    missing.append(sid)
            if activity_user is not None:
                self.act[activity_user] = now
            return missing

    def set_chosen(self, user_id: int, status: str) -> tuple[int, list[str], list[str]]:
        with self._lock:
            was = self._visible(user_id)
            self.chosen[user_id] = status
            now = status != INVISIBLE
            sids = self.user_sids.get(user_id, set())
            joined: list[str] = []
            left: list[str] = []
            if was != now:
                for res in sorted({self.socks[s][3] for s in sids if s in self.socks} - {""}):
                    viewers = self.visible_viewers.setdefault(res, set())
                    if now and user_id not in viewers:
                        viewers.add(user_id)
                        joined.append(res)
                    elif not now and user_id in viewers:
                        viewers.discard(user_id)
                        left.append(res)
            return len(sids), joined, left

    def viewers(self, resource: str, limit: int) -> tuple[int, list[dict]]:
        with self._lock:
            ids = sorted(self.visible_viewers.get(resource, ()))
            return len(ids), [{"id": uid, "name": self.names.get(uid, "")} for uid in ids[:limit]]

    def user_state(self, user_id: int, now: float) -> dict:
        with self._lock:
            live = [s for s in self.user_sids.get(user_id, ()) if self.exp.get(s, 0) >= now]
            return {"sockets": len(live),
                    "resources": sorted({self.socks[s][3] for s in live} - {""}),
                    "last_activity": self.act.get(user_id)}

    def last_activity(self, user_ids: list[int]) -> dict[int, float]:
        return {uid: self.act[uid] for uid in user_ids if uid in self.act}

    def online_user_ids(self) -> list[int]:
        with self._lock:
            return sorted(uid for uid in self.user_sids if self._visible(uid))

    def chosen_of(self, user_ids: list[int]) -> dict[int, str]:
        return {uid: self.chosen[uid] for uid in user_ids if uid in self.chosen}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.cnt)

    def sockets_of(self, user_id: int) -> list[dict]:
        with self._lock:
            sids = sorted(self.user_sids.get(user_id, ()))
        return [s for s in map(self.socket, sids) if s is not None]

    def socket(self, sid: str) -> dict | None:
        entry = self.socks.get(sid)
        if entry is None:
            return None
        uid, namespace, server, resource = entry
        return {"sid": sid, "user_id": uid, "namespace": namespace, "server_id": server,
                "resource": resource}


PresenceStore = RedisPresenceStore | MemoryPresenceStore


def get_store() -> PresenceStore:
    """The app's store: Redis when REDIS_URL is set, else one in this process's memory."""
    store = current_app.extensions.get("presence_store")
    if store is None:
        client = get_redis()
        store = RedisPresenceStore(client) if client is not None else MemoryPresenceStore()
        current_app.extensions["presence_store"] = store
    return store


def now() -> float:
    return time.time()
