"""This web process's live sockets: sid → user and namespace, the cap, graceful shutdown.

The shared, cross-process picture is in the presence store (Redis, or memory on the
embedded default); this registry is only what this process itself holds: for the cap,
the per-connection event rate limits, the presence refresh loop and shutdown. Handlers
read the user's id, name and role from here, not from the database.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from app import metrics
from app.extensions import socketio
from app.models import utcnow
from app.realtime.presence_events import presence_events
from app.services import presence

log = logging.getLogger(__name__)

SERVER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Connection:
    sid: str
    user_id: int
    namespace: str
    eio_sid: str
    name: str = ""
    role: str = "viewer"
    resource: tuple[str, int] | None = None  # what this socket views (for re-registering)
    connected_at: object = field(default_factory=utcnow)
    buckets: dict = field(default_factory=dict)  # event → [tokens, last refill (monotonic)]

    def take(self, event: str, burst: float, per_second: float) -> float:
        """Token bucket per connection and event: 0 when allowed, else seconds to wait."""
        now = time.monotonic()
        tokens, last = self.buckets.get(event, (burst, now))
        tokens = min(burst, tokens + (now - last) * per_second)
        if tokens >= 1:
            self.buckets[event] = (tokens - 1, now)
            return 0.0
        self.buckets[event] = (tokens, now)
        return (1 - tokens) / per_second if per_second > 0 else 60.0


_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_sockets_per_client: dict[str, int] = {}  # eio sid → namespaces it has connected


def add(sid: str, user_id: int, namespace: str, *, cap: int, name: str = "",
        role: str = "viewer") -> Connection | None:
    """Register a socket; None when it would open a client connection past ``cap``.

    The cap counts clients (Engine.IO connections), not namespaces: one browser tab on
    /feed, /episodes and /jobs is one connection.
    """
    eio_sid = socketio.server.manager.eio_sid_from_sid(sid, namespace) or sid
    with _lock:
        if eio_sid not in _sockets_per_client and len(_sockets_per_client) >= cap:
            return None
        conn = Connection(sid, user_id, namespace, eio_sid, name=name, role=role)
        _connections[sid] = conn
        _sockets_per_client[eio_sid] = _sockets_per_client.get(eio_sid, 0) + 1
    metrics.socket_connected(namespace)
    return conn


def reset() -> None:
    """Forget every socket: a new Socket.IO server (``init_app``) starts with none."""
    with _lock:
        metrics.sockets_reset(conn.namespace for conn in _connections.values())
        _connections.clear()
        _sockets_per_client.clear()


def client_count() -> int:
    return len(_sockets_per_client)


def remove(sid: str) -> Connection | None:
    with _lock:
        conn = _connections.pop(sid, None)
        if conn is not None:
            left = _sockets_per_client.get(conn.eio_sid, 1) - 1
            if left > 0:
                _sockets_per_client[conn.eio_sid] = left
            else:
                _sockets_per_client.pop(conn.eio_sid, None)
            metrics.socket_disconnected(conn.namespace)
        return conn


def get(sid: str) -> Connection | None:
    return _connections.get(sid)


def all_connections() -> list[Connection]:
    with _lock:
        return list(_connections.values())


def transport_count() -> int:
    """Engine.IO connections of this process (one per client, whatever its namespaces)."""
    server = getattr(socketio, "server", None)
    return len(getattr(getattr(server, "eio", None), "sockets", {}) or {})


def local_rooms() -> dict[str, int]:
    """Rooms of this process with their member counts (per namespace)."""
    rooms: dict[str, int] = {}
    manager = socketio.server.manager
    for namespace, by_room in list(manager.rooms.items()):
        for room, members in list(by_room.items()):
            if room is None or room in members:  # skip the per-sid rooms
                continue
            rooms[f"{namespace} {room}"] = len(members)
    return rooms


def shutdown_all() -> int:
    """Graceful shutdown: presence first (one script call per 500 sockets), then tell
    every client.

    The registry is emptied before the disconnects, so the per-socket disconnect handlers
    find nothing to clean up.
    """
    conns = all_connections()
    reset()
    presence.sockets_gone([c.sid for c in conns])
    presence_events().flush()
    count = 0
    for conn in conns:
        try:
            socketio.server.disconnect(conn.sid, namespace=conn.namespace)
            count += 1
        except Exception:  # noqa: BLE001 - a client already gone is fine
            pass
    log.info("shutdown: %s sockets disconnected", count)
    return count


def reregister(conn: Connection) -> None:
    """A live socket the store lost (it expired while this process stalled): add it back."""
    if get(conn.sid) is None or not socketio.server.manager.is_connected(conn.sid, conn.namespace):
        return
    presence.socket_connected(sid=conn.sid, user_id=conn.user_id, name=conn.name,
                              namespace=conn.namespace, server_id=SERVER_ID)
    if conn.resource is not None:
        presence.view(sid=conn.sid, user_id=conn.user_id, name=conn.name,
                      resource_type=conn.resource[0], resource_id=conn.resource[1])


def live_connections(grace_seconds: float = 30.0) -> list[Connection]:
    """This process's registered sockets that the Socket.IO server still holds.

    A client that vanished while its connect handler ran never gets a disconnect handler
    call: its registry entry would be refreshed for ever. Entries older than the grace and
    unknown to the server are dropped here (and leave presence)."""
    manager = socketio.server.manager
    cutoff = utcnow().timestamp() - grace_seconds
    live, gone = [], []
    for conn in all_connections():
        if manager.is_connected(conn.sid, conn.namespace) or conn.connected_at.timestamp() > cutoff:
            live.append(conn)
        else:
            gone.append(conn)
    for conn in gone:
        remove(conn.sid)
    if gone:
        presence.sockets_gone([c.sid for c in gone])
    return live


def refresh_loop(app, interval: float) -> None:
    """Keep this process's sockets alive in the presence store, pop the expired ones of
    dead processes, and write last activities (``presence.refresh_and_expire``)."""
    while True:
        socketio.sleep(interval)
        try:
            with app.app_context():
                presence.refresh_and_expire(live_connections(), reconnect=reregister)
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning("presence refresh failed: %s", exc)
