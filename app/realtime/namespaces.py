"""Socket.IO namespaces: JWT on connect, typed joins authorized like REST reads, presence.

Handlers are thin: authenticate, authorize, call a service function, answer.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app, request
from flask_socketio import ConnectionRefusedError, Namespace, join_room, leave_room
from marshmallow import ValidationError as MarshmallowValidationError

from app.api.schemas import StatusSchema
from app.auth import load_user_from_token
from app.errors import DatabaseUnavailable, DomainError, database_unavailable, rollback_quietly
from app.extensions import db, socketio
from app.models import User
from app.realtime import connections, control
from app.realtime.emit import (
    ADMIN,
    EPISODES,
    FEED,
    JOBS,
    ROOM_ADMINS,
    ROOM_ALL,
    batch_envelope_for,
    envelope,
    episode_room,
    job_room,
    user_room,
)
from app.services import joins, presence, replay, rooms

log = logging.getLogger(__name__)


def _refuse(code: str, message: str) -> ConnectionRefusedError:
    """A refusal the client can read: Socket.IO's ``connect_error`` carries
    ``{"message": message, "data": {"code", "message"}}`` (``err.data.code`` in socket.io-client).
    A single dict argument would reach the client as its ``str()``."""
    return ConnectionRefusedError(message, {"code": code, "message": message})


def _error(exc: DomainError) -> dict:
    return {"ok": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}}


def _ack_error(code: str, message: str, details: dict | None = None) -> dict:
    return {"ok": False, "error": {"code": code, "message": message, "details": details or {}}}


_limits_cache: dict[str, dict[str, tuple[float, float]]] = {}


def event_limits(config) -> dict[str, tuple[float, float]]:
    """``SOCKET_EVENT_LIMITS`` ("join=20/5,...": burst / refill per second) parsed once."""
    raw = config.get("SOCKET_EVENT_LIMITS") or ""
    if raw not in _limits_cache:
        limits = {}
        for part in raw.split(","):
            event, _, spec = part.strip().partition("=")
            burst, _, rate = spec.partition("/")
            try:
                limits[event.strip()] = (float(burst), float(rate or burst))
            except ValueError:
                log.warning("SOCKET_EVENT_LIMITS: ignoring %r", part)
        _limits_cache[raw] = limits
    return _limits_cache[raw]


class Busy(Exception):
    """No I/O slot free within SOCKET_IO_WAIT_SECONDS: the event is answered "unavailable"."""


_gate: threading.BoundedSemaphore | None = None
_gate_size = 0


@contextmanager
def io_slot():
    """Admission control for socket handlers' database and Redis work.

    A storm (thousands of connects or joins at once, one green thread each) would otherwise
    ask the database pool and the Redis pool for thousands of connections at once: the
    pools' bounded waits run out and most of the storm fails. At most
    ``SOCKET_IO_CONCURRENCY`` handlers do I/O at a time; the others wait here, in memory,
    up to ``SOCKET_IO_WAIT_SECONDS`` (then the event gets ``unavailable``), and none holds a
    pooled connection while waiting. The first connects of a user fill the auth and status
    caches, so the ones queued behind them read no database row.
    """
    global _gate, _gate_size
    size = max(1, current_app.config.get("SOCKET_IO_CONCURRENCY", 32))
    if _gate is None or _gate_size != size:
        _gate, _gate_size = threading.BoundedSemaphore(size), size
    gate = _gate
    if not gate.acquire(timeout=current_app.config.get("SOCKET_IO_WAIT_SECONDS", 30.0)):
        raise Busy("no I/O slot free")
    try:
        yield
    finally:
        gate.release()


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
        try:
            with io_slot():
                user = load_user_from_token(token)
                if user is not None:
                    user_id, name, role, is_admin = user.id, user.name, user.role, user.is_admin
                db.session.close()  # no connection held across the store's round trips
        except DatabaseUnavailable as exc:
            rollback_quietly()
            raise _refuse(exc.code, exc.message) from exc
        except Exception as exc:  # noqa: BLE001 - database trouble: refuse, no traceback
            rollback_quietly()
            log.warning("connect refused, auth unavailable: %s", exc)
            if database_unavailable(exc):
                raise _refuse("database_unavailable", "The database is unavailable") from exc
            raise _refuse("unavailable", "Try again shortly") from exc
        if user is None:
            raise _refuse("invalid_token", "The token is invalid, expired or revoked")
        if self.admin_only and not is_admin:
            raise _refuse("forbidden", "This namespace is for admins only")
        cap = current_app.config["MAX_CONNECTIONS"]
        sid = request.sid
        if connections.add(sid, user_id, self.namespace, cap=cap, name=name, role=role) is None:
            raise _refuse("too_many_connections", f"The server holds its maximum of {cap} connections")
        try:
            with io_slot():
                accepted = joins.open_socket(sid=sid, namespace=self.namespace,
                                             server_id=connections.SERVER_ID, user_id=user_id,
                                             name=name, token=token, since=since)
        except Exception as exc:  # noqa: BLE001 - presence store trouble: refuse, keep no trace
            connections.remove(sid)
            rollback_quietly()
            log.warning("connect refused, presence unavailable: %s", exc)
            if database_unavailable(exc):
                raise _refuse("database_unavailable", "The database is unavailable") from exc
            raise _refuse("unavailable", "Try again shortly") from exc
        if not accepted:
            connections.remove(sid)
            per_user = current_app.config["MAX_SOCKETS_PER_USER"]
            raise _refuse("too_many_user_connections",
                          f"This user already holds the maximum of {per_user} connections")
        last_event_id = auth.get("last_event_id")
        if isinstance(last_event_id, int) and not isinstance(last_event_id, bool):
            # Rooms are joined after the replay, so missed events arrive before live ones.
            socketio.start_background_task(self._replay_then_join, current_app._get_current_object(),
                                           sid, SocketUser(user_id, is_admin), last_event_id)
        else:
            self.join_default_rooms(SocketUser(user_id, is_admin), sid)

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

        def allowed(r: str) -> bool:
            return r == room if room is not None else self.may_see_room(user, r)

        for entry in history.entries:
            last = max(last, entry["id"])
            if "batch" in entry:  # one envelope per user: this socket's user's own, if any
                own = batch_envelope_for(entry, self.namespace, allowed)
                if own is not None:
                    self._emit_here(sid, entry["name"], own)
            elif any(ns == self.namespace and allowed(r) for ns, r in entry["routes"]):
                self._emit_here(sid, entry["name"], entry["envelope"])
        return last

    def on_disconnect(self, *args):
        sid = request.sid
        control.untrack(sid)
        if connections.remove(sid) is not None:
            try:
                with io_slot():
                    presence.socket_disconnected(sid)
            except Exception as exc:  # noqa: BLE001 - its entry expires by TTL instead
                log.warning("presence on disconnect failed: %s", exc)

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

    def limited(self, event: str) -> tuple[connections.Connection | None, dict | None]:
        """This socket's registry entry, or the error ack: not connected, or over the
        per-connection rate limit for ``event`` (``SOCKET_EVENT_LIMITS``)."""
        conn = connections.get(request.sid)
        if conn is None:
            return None, _ack_error("unauthorized", "Not connected")
        burst, per_second = event_limits(current_app.config).get(event, (0, 0))
        if burst > 0:
            wait = conn.take(event, burst, per_second)
            if wait > 0:
                return None, _ack_error("rate_limited", f"Too many {event} events; slow down",
                                        {"event": event, "retry_after": round(wait, 3)})
        return conn, None

    def on_heartbeat(self, data=None):
        """The client is alive and active."""
        conn, refused = self.limited("heartbeat")
        if refused:
            return refused
        try:
            with io_slot():
                return {"ok": presence.heartbeat(request.sid, conn.user_id)}
        except Exception as exc:  # noqa: BLE001 - answer, never a traceback
            log.warning("heartbeat failed: %s", exc)
            return _ack_error("unavailable", "Try again shortly")


class FeedNamespace(AuthenticatedNamespace):
    """A user's own notifications and the team's presence."""

    def join_default_rooms(self, user: User, sid: str) -> None:
        join_room(user_room(user.id), sid=sid, namespace=self.namespace)
        join_room(ROOM_ALL, sid=sid, namespace=self.namespace)

    def on_set_status(self, data=None):
        conn, refused = self.limited("set_status")
        if refused:
            return refused
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
        conn, refused = self.limited("join")
        if refused:
            return refused
        episode_id = _int_field(data, "episode_id")
        if episode_id is None:
            return _ack_error("validation_error", "episode_id is required")
        try:
            with io_slot():
                got = joins.join_episode(
                    sid=request.sid, user_id=conn.user_id, name=conn.name, episode_id=episode_id,
                    enter=lambda: self._join_replaying(episode_room(episode_id), data))
        except joins.EpisodeMissing:
            return _ack_error("not_found", "Episode not found")
        except Exception as exc:  # noqa: BLE001 - database or store trouble: a clear ack
            db.session.rollback()
            log.warning("join failed: %s", exc)
            return _ack_error("unavailable", "Try again shortly")
        if got is None:  # the socket left presence meanwhile (disconnecting)
            return _ack_error("unavailable", "Try again shortly")
        conn.resource = ("episode", episode_id)
        return {"ok": True, **got}

    def on_leave(self, data=None):
        conn = connections.get(request.sid)
        episode_id = _int_field(data, "episode_id")
        if conn is None or episode_id is None:
            return {"ok": False}
        leave_room(episode_room(episode_id))
        if conn.resource == ("episode", episode_id):
            conn.resource = None
        try:
            presence.unview(sid=request.sid, user_id=conn.user_id, name=conn.name,
                            resource_type="episode", resource_id=episode_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("leave failed: %s", exc)
            return _ack_error("unavailable", "Try again shortly")
        return {"ok": True}


class JobsNamespace(AuthenticatedNamespace):
    """Job progress: subscribe to one job or to every job of an episode."""

    def may_see_room(self, user: User, room: str) -> bool:
        return room == ROOM_ALL or room.startswith(("job:", "episode:"))

    def on_subscribe(self, data=None):
        _conn, refused = self.limited("subscribe")
        if refused:
            return refused
        job_id, episode_id = _int_field(data, "job_id"), _int_field(data, "episode_id")
        try:
            with io_slot():
                room = rooms.subscription_room(job_id=job_id, episode_id=episode_id)
                if room is not None:
                    self._join_replaying(room, data)
                    return {"ok": True, "room": room}
        except Exception as exc:  # noqa: BLE001 - a clear ack, never a traceback
            db.session.rollback()
            log.warning("subscribe failed: %s", exc)
            return _ack_error("unavailable", "Try again shortly")
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
