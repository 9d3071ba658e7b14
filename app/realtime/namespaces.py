"""Socket.IO namespaces: JWT on connect, typed joins authorized like REST reads, presence.

Handlers are thin: authenticate, authorize, call a service function, answer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app, request
from flask_socketio import ConnectionRefusedError, Namespace, join_room, leave_room
from marshmallow import ValidationError as MarshmallowValidationError

from app.api.schemas import StatusSchema
from app.auth import load_user_from_token
from app.errors import DomainError
from app.extensions import db, socketio
from app.models import Episode, Job, User
from app.realtime import connections, control
from app.realtime.emit import (
    ADMIN,
    EPISODES,
    FEED,
    JOBS,
    ROOM_ADMINS,
    ROOM_ALL,
    envelope,
    episode_room,
    job_room,
    user_room,
)
from app.services import presence, replay

log = logging.getLogger(__name__)


def _refuse(code: str, message: str) -> ConnectionRefusedError:
    return ConnectionRefusedError({"code": code, "message": message})


def _error(exc: DomainError) -> dict:
    return {"ok": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}}


def _int_field(data, name: str) -> int | None:
    value = (data or {}).get(name) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class SocketUser:
    """What replay and the default rooms need of a user, taken at connect: the replay
    task then reads no ``users`` row."""

    id: int
    is_admin: bool


class AuthenticatedNamespace(Namespace):
    """Every namespace: token in ``auth``, the cap, presence, replay of missed events."""

    admin_only = False

    def on_connect(self, auth=None):
        since = time.time()  # a session ended after this instant also ends this socket
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise _refuse("unauthorized", "An access token is required in auth.token")
        user = load_user_from_token(token)
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
            db.session.rollback()
            log.exception("presence on connect failed")
            raise _refuse("unavailable", "Try again shortly") from exc
        control.track(sid, self.namespace, user.id, token, since)
        last_event_id = auth.get("last_event_id")
        if isinstance(last_event_id, int) and not isinstance(last_event_id, bool):
            # Rooms are joined after the replay, so missed events arrive before live ones.
            socketio.start_background_task(self._replay_then_join, current_app._get_current_object(),
                                           sid, SocketUser(user.id, user.is_admin), last_event_id)
        else:
            self.join_default_rooms(user, sid)

    def join_default_rooms(self, user: User, sid: str) -> None:
        join_room(ROOM_ALL, sid=sid, namespace=self.namespace)

    def visible_rooms(self, user: User) -> set[str] | None:
        """Rooms of this namespace whose past events the user may see (None: prefix rules)."""
        return {ROOM_ALL, user_room(user.id)}

    def may_see_room(self, user: User, room: str) -> bool:
        return room in (self.visible_rooms(user) or set())

    def _replay_then_join(self, app, sid: str, user: SocketUser, last_event_id: int) -> None:
        """Replay, join the live rooms, replay what was delivered meanwhile.

        No database row is read here when the shared buffer has the history (a storm of
        reconnects must not queue for the pool); if the history cannot be read at all, the
        client is told to resync instead of being left without its rooms.
        """
        deadline = time.monotonic() + 30
        while not socketio.server.manager.is_connected(sid, self.namespace):
            if time.monotonic() > deadline or connections.get(sid) is None:
                return  # refused or already gone
            socketio.sleep(0.01)
        with app.app_context():
            last = self._replay_safely(user, sid, last_event_id)
            self.join_default_rooms(user, sid)
            if last is not None:
                self._replay_safely(user, sid, last)  # what was delivered while we replayed

    def _join_replaying(self, room: str, data) -> None:
        """Join a room; with ``last_event_id`` in the request, first send the room's events
        after it: those delivered between the client's reconnect (whose replay ran before
        it had rejoined this room) and this join would otherwise never reach it."""
        after_id = _int_field(data, "last_event_id")
        last = None
        if after_id is not None:
            last = self._replay_safely(None, request.sid, after_id, room=room)
        join_room(room)
        if last is not None:
            self._replay_safely(None, request.sid, last, room=room)

    def _replay_safely(self, user: SocketUser | None, sid: str, after_id: int,
                       room: str | None = None) -> int | None:
        try:
            return self._replay(user, sid, after_id, room)
        except Exception:  # noqa: BLE001 - database or Redis trouble: the client reloads
            log.exception("replay failed")
            db.session.rollback()
            self._emit_here(sid, "resync_required", envelope(
                "resync_required", {"last_event_id": after_id, "reason": "unavailable"},
                event_id=None, actor=None))
            return None
        finally:
            db.session.rollback()  # no connection held between the passes

    def _emit_here(self, sid: str, name: str, payload: dict) -> None:
        """To one socket of this process, without the message queue: a reconnect storm's
        replays would otherwise be published to (and decoded by) every web process."""
        socketio.server.emit(name, payload, to=sid, namespace=self.namespace, ignore_queue=True)

    def _replay(self, user: SocketUser | None, sid: str, after_id: int, room: str | None = None) -> int:
        """Send the missed events this socket may see (or, given ``room``, those of that
        room, which the caller authorized), from the shared history; or tell the client to
        resync over REST when that history no longer reaches back to ``after_id``.
        Returns the id the client is now at."""
        history = replay.history_after(after_id)
        if history.resync is not None:
            newest = history.newest if history.newest is not None else after_id
            self._emit_here(sid, "resync_required", envelope(
                "resync_required", {"last_event_id": newest, "reason": history.resync},
                event_id=None, actor=None))
            return max(newest, after_id)
        last = after_id
        for entry in history.entries:
            last = max(last, entry["id"])
            if any(ns == self.namespace and (r == room if room is not None
                                             else self.may_see_room(user, r))
                   for ns, r in entry["routes"]):
                self._emit_here(sid, entry["name"], entry["envelope"])
        return last

    def on_disconnect(self, *args):
        sid = request.sid
        control.untrack(sid)
        if connections.remove(sid) is not None:
            presence.socket_disconnected(sid)

    def current_user(self) -> User | None:
        conn = connections.get(request.sid)
        return db.session.get(User, conn.user_id) if conn else None

    def on_reauth(self, data=None):
        """Extend this socket's life with a fresh access token (before the old one expires,
        the server disconnects sockets whose token has expired)."""
        conn = connections.get(request.sid)
        token = data.get("token") if isinstance(data, dict) else None
        claims = control.reauthenticate(request.sid, conn.user_id, token) \
            if conn is not None and isinstance(token, str) else None
        if claims is None:
            return {"ok": False, "error": {"code": "invalid_token", "details": {},
                                           "message": "A valid access token of this user is required"}}
        return {"ok": True, "expires_at": claims["exp"]}

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
        try:  # the same schema as PUT /presence/me
            values = StatusSchema().load(data if isinstance(data, dict) else {})
        except MarshmallowValidationError as exc:
            return {"ok": False, "error": {"code": "validation_error", "message": "Invalid status",
                                           "details": exc.normalized_messages()}}
        try:
            return {"ok": True, "presence": presence.set_status(
                user, values["status"], values.get("message"))}
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
        self._join_replaying(episode_room(episode_id), data)
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
            self._join_replaying(job_room(job_id), data)
            return {"ok": True, "room": job_room(job_id)}
        if episode_id is not None and db.session.get(Episode, episode_id) is not None:
            self._join_replaying(episode_room(episode_id), data)
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
