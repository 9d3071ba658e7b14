"""This web process's live sockets: sid → user and namespace, the cap, graceful shutdown.

The shared, cross-process picture is in the database (``presence_sockets``); this registry
is only what this process itself holds, for the cap and for shutdown.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from app.extensions import socketio
from app.models import utcnow

log = logging.getLogger(__name__)

SERVER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Connection:
    sid: str
    user_id: int
    namespace: str
    eio_sid: str
    connected_at: object = field(default_factory=utcnow)


_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_sockets_per_client: dict[str, int] = {}  # eio sid → namespaces it has connected


def add(sid: str, user_id: int, namespace: str, *, cap: int) -> Connection | None:
    """Register a socket; None when it would open a client connection past ``cap``.

    The cap counts clients (Engine.IO connections), not namespaces: one browser tab on
    /feed, /episodes and /jobs is one connection.
    """
    eio_sid = socketio.server.manager.eio_sid_from_sid(sid, namespace) or sid
    with _lock:
        if eio_sid not in _sockets_per_client and len(_sockets_per_client) >= cap:
            return None
        conn = Connection(sid, user_id, namespace, eio_sid)
        _connections[sid] = conn
        _sockets_per_client[eio_sid] = _sockets_per_client.get(eio_sid, 0) + 1
    return conn


def reset() -> None:
    """Forget every socket: a new Socket.IO server (``init_app``) starts with none."""
    with _lock:
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
    """Graceful shutdown: presence first (one transaction for all), then tell every client.

    The registry is emptied before the disconnects, so the per-socket disconnect handlers
    find nothing to clean up: thousands of sockets cost one transaction, not thousands.
    """
    from app.services import presence

    conns = all_connections()
    reset()
    presence.forget_server(SERVER_ID)
    count = 0
    for conn in conns:
        try:
            socketio.server.disconnect(conn.sid, namespace=conn.namespace)
            count += 1
        except Exception:  # noqa: BLE001 - a client already gone is fine
            pass
    log.info("shutdown: %s sockets disconnected", count)
    return count


def refresh_loop(app, interval: float) -> None:
    """Keep this process's sockets fresh in the database so the stale sweep spares them."""
    from app.services import presence

    while True:
        socketio.sleep(interval)
        try:
            with app.app_context():
                presence.refresh_server_sockets(SERVER_ID, [c.sid for c in all_connections()])
        except Exception:  # noqa: BLE001 - try again next round
            log.exception("presence refresh failed")
