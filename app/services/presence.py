"""Presence: who is online, with what status, viewing what.

Two kinds of state (issue 12):
- ephemeral, changing on every connect, join, heartbeat and disconnect: sockets with a TTL,
  a user's sockets, viewers per resource, last activity. It lives in the presence store
  (``presence_store``: Redis, or process memory on the embedded default); no row lock,
  no transaction per join or heartbeat;
- what must last, in PostgreSQL ``user_presence``: the chosen status (``offline`` means
  invisible), the message, and the last activity, written by each web process in one
  statement per refresh round (``flush_activity``), not per heartbeat.

A user's shown status is their chosen one while they have a socket, else ``offline``.
Invisible users are never shown to others: not as viewers, not online, no last activity.
The events others hear (``presence_changed``, ``viewer_joined``/``viewer_left``,
``viewers_changed``) are coalesced and emitted by ``app/realtime/presence_events.py``.
"""
from __future__ import annotations

import threading
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import func, select

from app.errors import NotFound, ValidationError
from app.extensions import db, socketio
from app.models import User, UserPresence, isoformat, utcnow
from app.models.base import insert_for_dialect
from app.models.presence import STATUSES
from app.realtime.presence_events import presence_events, presence_payload
from app.services.presence_store import INVISIBLE, Removed, get_store, resource_key
from app.services.presence_store import now as _now
from app.services.transaction import atomic

VIEWERS_LIMIT = 200

_dirty_lock = threading.Lock()
_activity_dirty: dict[int, float] = {}  # user_id → last activity not yet in PostgreSQL


def _ttl() -> float:
    return float(current_app.config["PRESENCE_STALE_SECONDS"])


def _active(user_id: int, at: float) -> None:
    with _dirty_lock:
        _activity_dirty[user_id] = max(at, _activity_dirty.get(user_id, 0))


def chosen_status(user_id: int) -> tuple[str, str | None]:
    """(chosen status, message): the store's cache, else the row (read once, then cached)."""
    store = get_store()
    cached = store.get_chosen(user_id)
    if cached is not None:
        return cached
    row = db.session.execute(
        select(UserPresence.chosen_status, UserPresence.message)
        .where(UserPresence.user_id == user_id)).first()
    db.session.close()  # never hold a connection across the store's network calls
    status, message = (row[0], row[1]) if row else ("online", None)
    store.prime_chosen(user_id, status, message)
    return store.get_chosen(user_id) or (status, message)


def socket_connected(*, sid: str, user_id: int, name: str, namespace: str, server_id: str) -> bool:
    """A socket came up. False when the user already holds ``MAX_SOCKETS_PER_USER``."""
    store, now = get_store(), _now()
    ok, shown, cached = store.connect(sid=sid, user_id=user_id, name=name, namespace=namespace,
                                      server_id=server_id, expires_at=now + _ttl(),
                                      cap=current_app.config["MAX_SOCKETS_PER_USER"], now=now)
    # The chosen status comes back from the connect itself; only the first connect of a
    # user the store has not seen reads it from PostgreSQL. (A socket views nothing yet
    # at connect, so visibility only decides whether "came online" is announced.)
    status, message = cached if cached is not None else chosen_status(user_id)
    shown = shown and status != INVISIBLE
    if ok:
        _active(user_id, now)
        if shown:
            presence_events().presence_changed(presence_payload(user_id, name, status, message, now))
    return ok


def announce_removed(removed: list[Removed]) -> None:
    """Tell others about sockets that went away (closed, expired, or their process ended)."""
    if not removed:
        return
    store = get_store()
    names = store.names_of(sorted({r.user_id for r in removed}))
    offline = sorted({r.user_id for r in removed if r.went_offline})
    last_seen = store.last_activity(offline)
    events = presence_events()
    for r in removed:
        name = names.get(r.user_id) or ""
        if r.left_resource:
            events.viewer(r.resource, r.user_id, name, joined=False)
        if r.went_offline:
            events.presence_changed(presence_payload(
                r.user_id, name, "offline", None, last_seen.get(r.user_id)))


def sockets_gone(sids: list[str]) -> int:
    """Sockets closed on this process: remove them and tell others. Returns how many."""
    removed = get_store().disconnect(sids)
    announce_removed(removed)
    return len(removed)


def socket_disconnected(sid: str) -> bool:
    return sockets_gone([sid]) == 1


def force_disconnect(sid: str) -> None:
    """Disconnect a socket wherever it is connected (through the message queue); 404 if
    no process has it."""
    socket = get_store().socket(sid)
    if socket is None:
        raise NotFound("Connection not found")
    socketio.server.disconnect(sid, namespace=socket["namespace"])
    # The owning process cleans up on its disconnect handler; do it here too in case that
    # process is gone (idempotent: a socket is removed from the store once).
    socket_disconnected(sid)


def view(*, sid: str, user_id: int, name: str, resource_type: str, resource_id: int) -> dict | None:
    """This socket now views the resource (one per socket; the previous one is left).

    Returns ``{"viewers": the first VIEWERS_PAGE_SIZE by id, "viewer_count"}`` from the
    same script call; None for an unknown socket.
    """
    store, now = get_store(), _now()
    resource = resource_key(resource_type, resource_id)
    got = store.view(sid, resource, now=now, page=current_app.config["VIEWERS_PAGE_SIZE"])
    if got is None:
        return None
    _active(user_id, now)
    events = presence_events()
    if got.left_previous:
        events.viewer(got.previous, user_id, name, joined=False)
    if got.joined:
        events.viewer(resource, user_id, name, joined=True)
    return {"viewers": got.first_page, "viewer_count": got.count}


def unview(*, sid: str, user_id: int, name: str, resource_type: str, resource_id: int) -> bool:
    resource = resource_key(resource_type, resource_id)
    got = get_store().view(sid, "", now=_now(), expect=resource)
    if got is None:
        return False
    if got.left_previous:
        presence_events().viewer(resource, user_id, name, joined=False)
    return True


def heartbeat(sid: str, user_id: int) -> bool:
    """The client is alive and active: push its socket's expiry, note the activity."""
    now = _now()
    missing = get_store().touch([sid], expires_at=now + _ttl(), now=now, activity_user=user_id)
    _active(user_id, now)
    return sid not in missing


def set_status(user: User, status: str, message: str | None = None) -> dict:
    """The user's chosen status (kept in PostgreSQL); ``offline`` means invisible."""
    if status not in STATUSES:
        raise ValidationError("Invalid status", details={"status": [f"Must be one of {STATUSES}."]})
    user_id, name = user.id, user.name
    with atomic():
        before_status, before_message = chosen_status(user_id)
        now = utcnow()
        db.session.execute(
            insert_for_dialect(UserPresence.__table__)
            .values(user_id=user_id, chosen_status=status, message=message, last_activity_at=now,
                    created_at=now, updated_at=now)
            .on_conflict_do_update(index_elements=["user_id"], set_={
                "chosen_status": status, "message": message, "last_activity_at": now,
                "updated_at": now}))
    db.session.close()
    store = get_store()
    store.set_message(user_id, message)
    sockets, joined, left = store.set_chosen(user_id, status)
    stamp = now.timestamp()
    store.touch([], expires_at=0, now=stamp, activity_user=user_id)
    events = presence_events()
    for resource in left:
        events.viewer(resource, user_id, name, joined=False)
    for resource in joined:
        events.viewer(resource, user_id, name, joined=True)
    shown_before = before_status if sockets and before_status != INVISIBLE else "offline"
    shown = status if sockets and status != INVISIBLE else "offline"
    if shown != shown_before or (shown != "offline" and message != before_message):
        events.presence_changed(presence_payload(
            user_id, name, shown, message, stamp if shown != "offline" else None))
    return {"user_id": user_id, "name": name, "status": shown, "message": message,
            "last_activity_at": isoformat(now)}


def _iso(ts: float | None) -> str | None:
    return isoformat(datetime.fromtimestamp(ts, UTC)) if ts else None


def get_presence(user_id: int, viewer_id: int | None = None) -> dict:
    """A user's presence as ``viewer_id`` may see it (an invisible user looks offline to
    everyone else: no message, no last activity, viewing nothing)."""
    row = db.session.execute(
        select(User.id, User.name, UserPresence.chosen_status, UserPresence.message,
               UserPresence.last_activity_at)
        .outerjoin(UserPresence, UserPresence.user_id == User.id).where(User.id == user_id)).first()
    if row is None:
        raise NotFound("User not found")
    db.session.close()
    _, name, chosen, message, last_db = row
    chosen = chosen or "online"
    state = get_store().user_state(user_id, _now())
    last = state["last_activity"] or (last_db.timestamp() if last_db else None)
    if last_db and state["last_activity"]:
        last = max(last, last_db.timestamp())
    hidden = chosen == INVISIBLE and viewer_id != user_id
    status = chosen if state["sockets"] and chosen != INVISIBLE else "offline"
    return {
        "user_id": user_id, "name": name, "status": status,
        "message": None if hidden else message,
        "last_activity_at": None if hidden else _iso(last),
        "viewing": [] if hidden else [
            {"resource_type": r.partition(":")[0], "resource_id": int(r.partition(":")[2])}
            for r in state["resources"]],
    }


def online_users() -> list[dict]:
    """Everyone shown online (invisible users are not)."""
    store = get_store()
    ids = store.online_user_ids()
    if not ids:
        return []
    rows = db.session.execute(
        select(User.id, User.name, UserPresence.chosen_status, UserPresence.message)
        .outerjoin(UserPresence, UserPresence.user_id == User.id)
        .where(User.id.in_(ids)).order_by(User.name, User.id)).all()
    db.session.close()
    activity = store.last_activity(ids)
    return [presence_payload(uid, name, chosen or "online", message, activity.get(uid))
            for uid, name, chosen, message in rows if (chosen or "online") != INVISIBLE]


def viewers_of(resource_type: str, resource_id: int, *, limit: int = VIEWERS_LIMIT) -> list[dict]:
    """Visible users viewing the resource now (one entry per user, by id), capped: a room of
    thousands must not read and send thousands of names."""
    return get_store().viewers(resource_key(resource_type, resource_id), limit)[1]


def stats() -> dict:
    store = get_store()
    ids = store.online_user_ids()
    chosen = store.chosen_of(ids)
    by_status = {s: 0 for s in STATUSES}
    for uid in ids:
        by_status[chosen.get(uid, "online")] += 1
    total = db.session.scalar(select(func.count()).select_from(User)) or 0
    db.session.close()
    by_status["offline"] = max(0, total - len(ids))
    counts = store.counts()
    by_namespace = {k[3:]: v for k, v in counts.items() if k.startswith("ns:") and v > 0}
    return {
        "users_online": len(ids),
        "by_status": by_status,
        "connections": sum(by_namespace.values()),
        "connections_by_namespace": by_namespace,
        "viewing": max(0, counts.get("viewing", 0)),
    }


def flush_activity() -> int:
    """Write the last activity of users seen since the last flush: one statement for all."""
    with _dirty_lock:
        dirty = dict(_activity_dirty)
        _activity_dirty.clear()
    if not dirty:
        return 0
    now = utcnow()
    table = UserPresence.__table__
    rows = [{"user_id": uid, "chosen_status": "online", "last_activity_at":
             datetime.fromtimestamp(ts, UTC), "created_at": now, "updated_at": now}
            for uid, ts in sorted(dirty.items())]
    stmt = insert_for_dialect(table)
    stmt = stmt.on_conflict_do_update(index_elements=["user_id"], set_={
        "last_activity_at": stmt.excluded.last_activity_at, "updated_at": stmt.excluded.updated_at})
    try:
        with atomic():
            existing = set(db.session.scalars(select(User.id).where(User.id.in_(list(dirty)))))
            rows = [r for r in rows if r["user_id"] in existing]  # a user deleted meanwhile
            if rows:
                db.session.execute(stmt, rows)
    except Exception:
        with _dirty_lock:  # try again next round
            for uid, ts in dirty.items():
                _activity_dirty[uid] = max(ts, _activity_dirty.get(uid, 0))
        raise
    finally:
        db.session.close()
    return len(rows)


def refresh_and_expire(local: list, *, reconnect) -> dict:
    """One round of a web process's presence loop.

    1. push the expiry of this process's live sockets (one script call per 1,000); any the
       store no longer has (expired while this process stalled) are registered again
       through ``reconnect(conn)``;
    2. pop the sockets whose expiry passed (their process died without a goodbye) and
       announce them (``viewer_left``, offline): a ZRANGEBYSCORE over the expiry set, not a
       scan of every socket; every live process does it, the script makes each pop once;
    3. write the last activities seen since the previous round.
    """
    store, now = get_store(), _now()
    missing = store.touch([c.sid for c in local], expires_at=now + _ttl(), now=now)
    by_sid = {c.sid: c for c in local}
    for sid in missing:
        if sid in by_sid:
            reconnect(by_sid[sid])
    expired = _pop_all_expired(store, now)
    flushed = flush_activity()
    return {"refreshed": len(local) - len(missing), "reregistered": len(missing),
            "expired": len(expired), "activity_rows": flushed}


def sweep_expired() -> int:
    """Beat's safety net when no web process runs the loop: pop and announce expired sockets."""
    removed = _pop_all_expired(get_store(), _now())
    presence_events().flush()
    return len(removed)


def _pop_all_expired(store, now: float, batch: int = 1000) -> list[Removed]:
    """Pop expired sockets a batch per script call (each call short, so Redis is never
    blocked long), until none is left; announce them."""
    removed: list[Removed] = []
    for _ in range(100):
        got = store.pop_expired(now, batch)
        announce_removed(got)
        removed += got
        if len(got) < batch:
            break
    return removed
