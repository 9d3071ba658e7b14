"""Socket.IO namespaces: JWT on connect, typed joins authorized like REST reads, presence.

Handlers are thin: authenticate, authorize, call a service function, answer.
"""
from __future__ import annotations

import logging
import time

from flask import current_app, request
from flask_socketio import ConnectionRefusedError, Namespace, join_room, leave_room
from sqlalchemy import select

from app.auth import load_user_from_token
from app.errors import DatabaseUnavailable, DomainError, database_unavailable, rollback_quietly
from app.extensions import db, socketio
from app.models import DomainEvent, Episode, Job, User
from app.realtime import connections
from app.realtime.emit import (
    ADMIN,
    EPISODES,
    FEED,
    JOBS,
    ROOM_ADMINS,
    ROOM_ALL,
    emit_to,
    episode_room,
    event_envelope,
    job_room,
    routes_for,
    user_room,
)
from app.services import presence

log = logging.getLogger(__name__)
REPLAY_LIMIT = 1000


def _refuse(code: str, message: str) -> ConnectionRefusedError:
    """A refusal the client can act on: ``{"message", "data": {"code", "message"}}``.

    Two arguments, so python-socketio sends the dict as the packet's ``data`` (what a
    JavaScript client reads as ``err.data``); one dict argument would be stringified.
    """
    return ConnectionRefusedError(message, {"code": code, "message": message})


def _error(exc: DomainError) -> dict:
    return {"ok": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}}


def _int_field(data, name: str) -> int | None:
    value = (data or {}).get(name) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class AuthenticatedNamespace(Namespace):
    """Every namespace: token in ``auth``, the cap, presence, replay of missed events."""

    admin_only = False

    def on_connect(self, auth=None):
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise _refuse("unauthorized", "An access token is required in auth.token")
        try:
            user = load_user_from_token(token)
        except DatabaseUnavailable as exc:
            rollback_quietly()
            raise _refuse(exc.code, exc.message) from exc
        if user is None:
            raise _refuse("invalid_token", "The token is invalid, expired or revoked")
        if self.admin_only and not user.is_admin:
            raise _refuse("forbidden", "This namespace is for admins only")
        cap = current_app.config["MAX_CONNECTIONS"]
        sid = request.sid
        if connections.add(sid, user.id, self.namespace, cap=cap) is None:
            raise _refuse("too_many_connections", f"The server holds its maximum of {cap} connections")
        try:
            presence.socket_connected(sid=sid, user=user, namespace=self.namespace,
                                      server_id=connections.SERVER_ID)
        except Exception as exc:  # noqa: BLE001 - database trouble: refuse, keep no trace
            connections.remove(sid)
            rollback_quietly()
            log.exception("presence on connect failed")
            if database_unavailable(exc):
                raise _refuse("database_unavailable", "The database is unavailable") from exc
            raise _refuse("unavailable", "Try again shortly") from exc
        last_event_id = auth.get("last_event_id")
        if isinstance(last_event_id, int) and not isinstance(last_event_id, bool):
            # Rooms are joined after the replay, so missed events arrive before live ones.
            socketio.start_background_task(self._replay_then_join, current_app._get_current_object(),
                                           sid, user.id, last_event_id)
        else:
            self.join_default_rooms(user, sid)

    def join_default_rooms(self, user: User, sid: str) -> None:
        join_room(ROOM_ALL, sid=sid, namespace=self.namespace)

    def visible_rooms(self, user: User) -> set[str] | None:
        """Rooms of this namespace whose past events the user may see (None: prefix rules)."""
        return {ROOM_ALL, user_room(user.id)}

    def may_see_room(self, user: User, room: str) -> bool:
        return room in (self.visible_rooms(user) or set())

    def _replay_then_join(self, app, sid: str, user_id: int, last_event_id: int) -> None:
        deadline = time.monotonic() + 5
        while not socketio.server.manager.is_connected(sid, self.namespace):
            if time.monotonic() > deadline:
                return
            socketio.sleep(0.01)
        with app.app_context():
            user = db.session.get(User, user_id)
            last = self._replay(user, sid, last_event_id)
            self.join_default_rooms(user, sid)
            self._replay(user, sid, last)  # what was delivered while we replayed

    def _replay(self, user: User, sid: str, after_id: int) -> int:
        rows = list(db.session.scalars(
            select(DomainEvent)
            .where(DomainEvent.id > after_id, DomainEvent.delivered_at.is_not(None))
            .order_by(DomainEvent.id).limit(REPLAY_LIMIT)))
        last = after_id
        actors = {u.id: u for u in db.session.scalars(
            select(User).where(User.id.in_({r.actor_id for r in rows if r.actor_id})))}
        for event in rows:
            last = event.id
            if any(ns == self.namespace and self.may_see_room(user, room)
                   for ns, room in routes_for(event)):
                emit_to([(self.namespace, sid)], event.name,
                        event_envelope(event, actors.get(event.actor_id)))
        if len(rows) == REPLAY_LIMIT:
            emit_to([(self.namespace, sid)], "resync_required",
                    {"id": None, "event": "resync_required", "data": {"last_event_id": last},
                     "actor": None, "timestamp": None})
        return last

    def on_disconnect(self, *args):
        sid = request.sid
        if connections.remove(sid) is not None:
            presence.socket_disconnected(sid)

    def current_user(self) -> User | None:
        conn = connections.get(request.sid)
        return db.session.get(User, conn.user_id) if conn else None

    def on_heartbeat(self, data=None):
        """The client is alive and active."""
        return {"ok": presence.heartbeat(request.sid)}


class FeedNamespace(AuthenticatedNamespace):
    """A user's own notifications and the team's presence."""

    def join_default_rooms(self, user: User, sid: str) -> None:
        join_room(user_room(user.id), sid=sid, namespace=self.namespace)
        join_room(ROOM_ALL, sid=sid, namespace=self.namespace)

    def on_set_status(self, data=None):
        user = self.current_user()
        if user is None:
            return {"ok": False}
        data = data if isinstance(data, dict) else {}
        try:
            return {"ok": True, "presence": presence.set_status(
                user, str(data.get("status", "")), data.get("message"))}
        except DomainError as exc:
            return _error(exc)


class EpisodesNamespace(AuthenticatedNamespace):
    """A room per episode: updates, files and who is viewing it."""

    def may_see_room(self, user: User, room: str) -> bool:
        return room == ROOM_ALL or room.startswith("episode:")  # everyone reads episodes

    def on_join(self, data=None):
        user = self.current_user()
        episode_id = _int_field(data, "episode_id")
        if user is None or episode_id is None:
            return {"ok": False, "error": {"code": "validation_error",
                                           "message": "episode_id is required", "details": {}}}
        if db.session.get(Episode, episode_id) is None:
            return {"ok": False, "error": {"code": "not_found", "message": "Episode not found",
                                           "details": {}}}
        join_room(episode_room(episode_id))
        viewers = presence.view(sid=request.sid, user=user, resource_type="episode",
                                resource_id=episode_id)
        return {"ok": True, "viewers": viewers}

    def on_leave(self, data=None):
        user = self.current_user()
        episode_id = _int_field(data, "episode_id")
        if user is None or episode_id is None:
            return {"ok": False}
        leave_room(episode_room(episode_id))
        presence.unview(sid=request.sid, user=user, resource_type="episode", resource_id=episode_id)
        return {"ok": True}


class JobsNamespace(AuthenticatedNamespace):
    """Job progress: subscribe to one job or to every job of an episode."""

    def may_see_room(self, user: User, room: str) -> bool:
        return room == ROOM_ALL or room.startswith(("job:", "episode:"))

    def on_subscribe(self, data=None):
        job_id, episode_id = _int_field(data, "job_id"), _int_field(data, "episode_id")
        if job_id is not None and db.session.get(Job, job_id) is not None:
            join_room(job_room(job_id))
            return {"ok": True, "room": job_room(job_id)}
        if episode_id is not None and db.session.get(Episode, episode_id) is not None:
            join_room(episode_room(episode_id))
            return {"ok": True, "room": episode_room(episode_id)}
        code = "not_found" if (job_id or episode_id) else "validation_error"
        return {"ok": False, "error": {"code": code, "message": "Unknown job or episode",
                                       "details": {}}}

    def on_unsubscribe(self, data=None):
        job_id, episode_id = _int_field(data, "job_id"), _int_field(data, "episode_id")
        if job_id is not None:
            leave_room(job_room(job_id))
        if episode_id is not None:
            leave_room(episode_room(episode_id))
        return {"ok": True}


class AdminNamespace(AuthenticatedNamespace):
    """Admins only: every event, plus admin alerts."""

    admin_only = True

    def join_default_rooms(self, user: User, sid: str) -> None:
        join_room(ROOM_ADMINS, sid=sid, namespace=self.namespace)

    def may_see_room(self, user: User, room: str) -> bool:
        return user.is_admin


_registered = False


def register_namespaces() -> None:
    """Register the namespace handlers on the Socket.IO singleton (once per process)."""
    global _registered
    if _registered:
        return
    for cls, name in ((FeedNamespace, FEED), (EpisodesNamespace, EPISODES),
                      (JobsNamespace, JOBS), (AdminNamespace, ADMIN)):
        socketio.on_namespace(cls(name))
    _registered = True
