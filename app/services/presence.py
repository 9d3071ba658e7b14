"""Presence: who is online, with what status, viewing what.

State lives in the database (``user_presence`` per user, ``presence_sockets`` per socket),
so every web process sees the same picture. Changes others must hear about
(``presence_changed``, ``viewer_joined``, ``viewer_left``) go through the outbox like every
other event: they get ids, reach clients on any process, and can be replayed.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from app.errors import NotFound, ValidationError
from app.extensions import db
from app.models import PresenceSocket, User, UserPresence, isoformat, utcnow
from app.models.base import insert_for_dialect
from app.models.presence import STATUSES
from app.services import events


def _lock_presence(user_id: int) -> UserPresence:
    """The user's presence row, created if missing, locked for this transaction.

    The lock serialises connects and disconnects of one user across web processes, so
    "last socket gone → offline" cannot race a new connect.
    """
    db.session.execute(
        insert_for_dialect(UserPresence.__table__)
        .values(user_id=user_id, status="offline", chosen_status="online",
                created_at=utcnow(), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    query = select(UserPresence).where(UserPresence.user_id == user_id)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update()
    return db.session.scalars(query.execution_options(populate_existing=True)).one()


def _socket_count(user_id: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(PresenceSocket).where(PresenceSocket.user_id == user_id)
    ) or 0


def presence_dict(presence: UserPresence | None, user: User) -> dict:
    return {
        "user_id": user.id,
        "name": user.name,
        "status": presence.status if presence else "offline",
        "message": presence.message if presence else None,
        "last_activity_at": isoformat(presence.last_activity_at) if presence else None,
    }


def _record_presence_changed(user: User, presence: UserPresence) -> None:
    events.record(
        "presence_changed", action="", actor=user, resource_type="user", resource_id=user.id,
        resource_name=user.name, payload=presence_dict(presence, user),
    )


def _set_status(user: User, presence: UserPresence, status: str) -> None:
    if presence.status != status:
        presence.status = status
        _record_presence_changed(user, presence)


def socket_connected(*, sid: str, user: User, namespace: str, server_id: str) -> None:
    """A socket came up: remember it; the user is online (with their chosen status)."""
    presence = _lock_presence(user.id)
    now = utcnow()
    db.session.add(PresenceSocket(sid=sid, user_id=user.id, namespace=namespace,
                                  server_id=server_id, last_heartbeat_at=now))
    presence.last_activity_at = now
    _set_status(user, presence, presence.chosen_status)
    db.session.commit()


def socket_disconnected(sid: str) -> bool:
    """A socket went away (closed, refused later, or swept as stale). False if unknown."""
    socket = db.session.get(PresenceSocket, sid)
    if socket is None:
        db.session.rollback()
        return False
    user = db.session.get(User, socket.user_id)
    presence = _lock_presence(socket.user_id)
    if socket.resource_type is not None:
        _record_viewer(user, "viewer_left", socket.resource_type, socket.resource_id)
    db.session.delete(socket)
    db.session.flush()
    if _socket_count(socket.user_id) == 0:
        _set_status(user, presence, "offline")
    db.session.commit()
    return True


def _viewer_event(user: User, name: str, resource_type: str, resource_id: int | None) -> dict:
    return dict(
        name=name, action="", actor=user, resource_type=resource_type, resource_id=resource_id,
        payload={f"{resource_type}_id": resource_id, "resource_type": resource_type,
                 "resource_id": resource_id, "user": {"id": user.id, "name": user.name}},
    )


def _record_viewer(user: User, name: str, resource_type: str, resource_id: int | None) -> None:
    spec = _viewer_event(user, name, resource_type, resource_id)
    events.record(spec.pop("name"), **spec)


def view(*, sid: str, user: User, resource_type: str, resource_id: int) -> list[dict]:
    """This socket now views the resource (one per socket; the previous one is left)."""
    socket = db.session.get(PresenceSocket, sid)
    if socket is None:
        raise NotFound("Unknown connection")
    if (socket.resource_type, socket.resource_id) != (resource_type, resource_id):
        if socket.resource_type is not None:
            _record_viewer(user, "viewer_left", socket.resource_type, socket.resource_id)
        socket.resource_type, socket.resource_id = resource_type, resource_id
        _record_viewer(user, "viewer_joined", resource_type, resource_id)
    _touch(socket)
    db.session.commit()
    return viewers_of(resource_type, resource_id)


def unview(*, sid: str, user: User, resource_type: str, resource_id: int) -> bool:
    socket = db.session.get(PresenceSocket, sid)
    if socket is None or (socket.resource_type, socket.resource_id) != (resource_type, resource_id):
        db.session.rollback()
        return False
    socket.resource_type = socket.resource_id = None
    _record_viewer(user, "viewer_left", resource_type, resource_id)
    _touch(socket)
    db.session.commit()
    return True


def _touch(socket: PresenceSocket) -> None:
    now = utcnow()
    socket.last_heartbeat_at = now
    db.session.execute(update(UserPresence).where(UserPresence.user_id == socket.user_id)
                       .values(last_activity_at=now, updated_at=now))


def heartbeat(sid: str) -> bool:
    """The client is alive and active: refresh the socket and the user's last activity."""
    socket = db.session.get(PresenceSocket, sid)
    if socket is None:
        db.session.rollback()
        return False
    _touch(socket)
    db.session.commit()
    return True


def set_status(user: User, status: str, message: str | None = None) -> dict:
    """The user's chosen status; shown while connected ("offline" means invisible)."""
    if status not in STATUSES:
        raise ValidationError("Invalid status", details={"status": [f"Must be one of {STATUSES}."]})
    presence = _lock_presence(user.id)
    changed = presence.chosen_status != status or presence.message != message
    presence.chosen_status = status
    presence.message = message
    presence.last_activity_at = utcnow()
    shown = status if _socket_count(user.id) > 0 else "offline"
    if presence.status != shown or changed:
        presence.status = shown
        _record_presence_changed(user, presence)
    db.session.commit()
    return presence_dict(presence, user)


def get_presence(user_id: int) -> dict:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    body = presence_dict(db.session.get(UserPresence, user_id), user)
    body["viewing"] = [
        {"resource_type": t, "resource_id": i}
        for t, i in db.session.execute(
            select(PresenceSocket.resource_type, PresenceSocket.resource_id)
            .where(PresenceSocket.user_id == user_id, PresenceSocket.resource_type.is_not(None))
            .distinct())
    ]
    return body


def online_users() -> list[dict]:
    rows = db.session.execute(
        select(UserPresence, User).join(User, User.id == UserPresence.user_id)
        .where(UserPresence.status != "offline").order_by(User.name))
    return [presence_dict(p, u) for p, u in rows]


VIEWERS_LIMIT = 200


def viewers_of(resource_type: str, resource_id: int, *, limit: int = VIEWERS_LIMIT) -> list[dict]:
    """Users with at least one socket viewing the resource now (one entry per user).

    Capped: a join to a room of thousands must not read and send thousands of names.
    """
    viewing = (select(PresenceSocket.user_id)
               .where(PresenceSocket.resource_type == resource_type,
                      PresenceSocket.resource_id == resource_id)
               .distinct().order_by(PresenceSocket.user_id).limit(limit).subquery())
    rows = db.session.execute(
        select(User.id, User.name).join(viewing, viewing.c.user_id == User.id).order_by(User.id))
    return [{"id": uid, "name": name} for uid, name in rows]


def stats() -> dict:
    by_status = dict(db.session.execute(
        select(UserPresence.status, func.count()).group_by(UserPresence.status)).all())
    by_namespace = dict(db.session.execute(
        select(PresenceSocket.namespace, func.count()).group_by(PresenceSocket.namespace)).all())
    users_online = db.session.scalar(
        select(func.count(func.distinct(PresenceSocket.user_id)))) or 0
    return {
        "users_online": users_online,
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "connections": sum(by_namespace.values()),
        "connections_by_namespace": by_namespace,
        "viewing": db.session.scalar(select(func.count()).select_from(PresenceSocket)
                                     .where(PresenceSocket.resource_type.is_not(None))) or 0,
    }


def refresh_server_sockets(server_id: str, sids: list[str]) -> None:
    """A live web process vouches for its sockets, so the sweep only removes dead ones."""
    if not sids:
        return
    db.session.execute(update(PresenceSocket)
                       .where(PresenceSocket.server_id == server_id, PresenceSocket.sid.in_(sids))
                       .values(last_heartbeat_at=utcnow()))
    db.session.commit()


def sweep_stale(stale_seconds: int, *, now: datetime | None = None) -> list[str]:
    """Remove sockets silent for ``stale_seconds`` (their process died): viewer_left, offline."""
    cutoff = (now or utcnow()) - timedelta(seconds=stale_seconds)
    sids = list(db.session.scalars(
        select(PresenceSocket.sid).where(PresenceSocket.last_heartbeat_at < cutoff).limit(1000)))
    db.session.rollback()
    return [sid for sid in sids if socket_disconnected(sid)]


def forget_server(server_id: str) -> int:
    """Graceful shutdown of a web process: all its sockets are gone, in one transaction.

    One transaction for all (not one per socket): a process holding thousands of sockets
    must finish before its shutdown deadline.
    """
    sockets = list(db.session.scalars(
        select(PresenceSocket).where(PresenceSocket.server_id == server_id)))
    if not sockets:
        db.session.rollback()
        return 0
    user_ids = sorted({s.user_id for s in sockets})
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(user_ids)))}
    specs = [_viewer_event(users[s.user_id], "viewer_left", s.resource_type, s.resource_id)
             for s in sockets if s.resource_type is not None]
    db.session.execute(PresenceSocket.__table__.delete()
                       .where(PresenceSocket.server_id == server_id))
    still_connected = set(db.session.scalars(
        select(PresenceSocket.user_id).where(PresenceSocket.user_id.in_(user_ids)).distinct()))
    gone = [uid for uid in user_ids if uid not in still_connected]
    query = select(UserPresence).where(UserPresence.user_id.in_(gone))
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update()
    for presence in db.session.scalars(query):
        if presence.status != "offline":
            presence.status = "offline"
            specs.append(dict(name="presence_changed", action="", actor=users[presence.user_id],
                              resource_type="user", resource_id=presence.user_id,
                              resource_name=users[presence.user_id].name,
                              payload=presence_dict(presence, users[presence.user_id])))
    events.record_many(specs)
    db.session.commit()
    return len(sockets)


