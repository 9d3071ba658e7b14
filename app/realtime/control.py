"""Sessions that end: the sockets of a logged-out, expired, demoted or deactivated session close.

A socket is authenticated once, at connect; the token it presented may be revoked, expire
or belong to a user whose role or account changes long before the socket goes away. So
each web process remembers, per socket it holds, the token's user, ``jti``, session family
(``fam``) and ``exp``, and ends sockets on two triggers:

- a control message ``{"user_id" | "jti" | "family", "reason", "at"}`` on the Redis
  channel ``ec:sessions``, which every web process listens to (a listener task started
  by ``app.server.serve``); the process that publishes applies it to its own sockets at
  once, so without Redis (one process) nothing else is needed;
- a timer (``SESSION_CHECK_SECONDS``) that ends sockets whose token has expired, from a
  heap ordered by ``exp``. A client may extend its socket first with ``reauth {token}``
  (a fresh access token of the same user).

Ending a socket sends it ``session_ended {reason}`` and then disconnects it: the client
knows whether to refresh its token and reconnect, or to go to the login page.

A connect that read the user before a change and registers after the message went by
would slip through; messages are therefore kept for ``_REMEMBER_SECONDS`` and a socket
whose connect started before a matching message is ended as soon as it registers.
"""
from __future__ import annotations

import heapq
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import redis
from flask import Flask
from flask_jwt_extended import decode_token

from app.auth import token_state
from app.extensions import socketio
from app.realtime.emit import envelope
from app.redis_client import get_redis

log = logging.getLogger(__name__)

CHANNEL = "ec:sessions"
ORIGIN = uuid.uuid4().hex  # this process: it applies its own messages before publishing
_REMEMBER_SECONDS = 30.0


@dataclass
class TrackedSocket:
    sid: str
    namespace: str
    user_id: int
    jti: str | None
    family: str | None
    exp: float | None
    since: float  # when its connect began (wall clock)


_lock = threading.Lock()
_sockets: dict[str, TrackedSocket] = {}
_expiries: list[tuple[float, str]] = []  # heap of (exp, sid); stale entries skipped
_recent: deque[dict] = deque()


def reset() -> None:
    with _lock:
        _sockets.clear()
        _expiries.clear()
        _recent.clear()


def _matches(message: dict, sock: TrackedSocket) -> bool:
    if message.get("namespaces") and sock.namespace not in message["namespaces"]:
        return False
    if message.get("user_id") is not None and message["user_id"] == sock.user_id:
        return True
    if message.get("jti") and message["jti"] == sock.jti:
        return True
    return bool(message.get("family")) and message["family"] == sock.family


def track(sid: str, namespace: str, user_id: int, token: str, since: float) -> None:
    """Remember a socket's token (called at the end of a successful connect)."""
    try:
        claims = decode_token(token, allow_expired=True)
    except Exception:  # noqa: BLE001 - it was just validated; nothing to remember otherwise
        claims = {}
    sock = TrackedSocket(sid, namespace, user_id, claims.get("jti"), claims.get("fam"),
                         float(claims["exp"]) if "exp" in claims else None, since)
    with _lock:
        _sockets[sid] = sock
        if sock.exp is not None:
            heapq.heappush(_expiries, (sock.exp, sid))
        _forget_old_messages()
        missed = next((m for m in _recent if m["at"] >= since and _matches(m, sock)), None)
    if missed is not None:  # its session ended while it was connecting
        socketio.start_background_task(_end_when_connected, sock, missed["reason"])


def untrack(sid: str) -> None:
    with _lock:
        _sockets.pop(sid, None)


def reauthenticate(sid: str, user_id: int, token: str) -> dict | None:
    """Move a live socket onto a fresh access token of the same user; its claims, or None."""
    try:
        claims = decode_token(token)
    except Exception:  # noqa: BLE001 - expired, bad signature, malformed
        return None
    if claims.get("type") != "access" or str(claims.get("sub")) != str(user_id):
        return None
    revoked, user = token_state(claims["jti"], user_id)
    if revoked or user is None:
        return None
    with _lock:
        sock = _sockets.get(sid)
        if sock is None:
            return None
        sock.jti, sock.family, sock.exp = claims["jti"], claims.get("fam"), float(claims["exp"])
        heapq.heappush(_expiries, (sock.exp, sid))
    return claims


def _forget_old_messages() -> None:
    horizon = time.time() - _REMEMBER_SECONDS
    while _recent and _recent[0]["at"] < horizon:
        _recent.popleft()


def end_sessions(*, reason: str, user_id: int | None = None, jti: str | None = None,
                 family: str | None = None, namespaces: list[str] | None = None) -> int:
    """End the matching sockets on every web process; the count ended in this one.

    Call after the change that ends them has committed (a socket that reconnects at once
    must find it).
    """
    if user_id is None and not jti and not family:
        raise ValueError("end_sessions needs a user, a token or a session family")
    message = {"reason": reason, "user_id": user_id, "jti": jti, "family": family,
               "namespaces": namespaces, "at": time.time(), "origin": ORIGIN}
    ended = apply(message)
    client = get_redis()
    if client is not None:
        try:
            client.publish(CHANNEL, json.dumps(message))
        except Exception:  # noqa: BLE001 - tokens still expire; log it loudly
            log.exception("could not publish session end (%s) to other web processes", reason)
    return ended


def apply(message: dict) -> int:
    """End this process's sockets that the message names."""
    with _lock:
        _recent.append(message)
        _forget_old_messages()
        doomed = [s for s in _sockets.values() if _matches(message, s)]
        for sock in doomed:
            _sockets.pop(sock.sid, None)
    for sock in doomed:
        _end(sock, message["reason"])
    return len(doomed)


def _end(sock: TrackedSocket, reason: str) -> None:
    try:
        # Local only: every process ends its own sockets, the queue need not carry this.
        socketio.server.emit("session_ended", envelope("session_ended", {"reason": reason},
                                                       event_id=None, actor=None),
                             to=sock.sid, namespace=sock.namespace, ignore_queue=True)
        socketio.server.disconnect(sock.sid, namespace=sock.namespace, ignore_queue=True)
    except Exception:  # noqa: BLE001 - a socket already gone is fine
        log.debug("ending socket %s failed", sock.sid, exc_info=True)


def _end_when_connected(sock: TrackedSocket, reason: str) -> None:
    deadline = time.monotonic() + 5
    while not socketio.server.manager.is_connected(sock.sid, sock.namespace):
        if time.monotonic() > deadline:
            return
        socketio.sleep(0.01)
    untrack(sock.sid)
    _end(sock, reason)


def end_expired(now: float | None = None) -> int:
    """End the sockets whose access token has expired (the timer's one step)."""
    now = time.time() if now is None else now
    doomed = []
    with _lock:
        while _expiries and _expiries[0][0] <= now:
            exp, sid = heapq.heappop(_expiries)
            sock = _sockets.get(sid)
            if sock is not None and sock.exp == exp:  # not reauthenticated since
                del _sockets[sid]
                doomed.append(sock)
    for sock in doomed:
        _end(sock, "token_expired")
    return len(doomed)


def expiry_loop(interval: float) -> None:
    while True:
        socketio.sleep(interval)
        try:
            end_expired()
        except Exception:  # noqa: BLE001 - next round
            log.exception("token expiry sweep failed")


def listen_loop(app: Flask) -> None:
    """Apply other processes' control messages; reconnect when Redis comes back."""
    while True:
        pubsub = None
        try:
            # Its own connection: the shared client's read timeout would end a quiet wait.
            client = redis.Redis.from_url(app.config["REDIS_URL"], decode_responses=True,
                                          socket_connect_timeout=2, health_check_interval=15)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            while True:
                raw = pubsub.get_message(timeout=5.0)
                if raw is None:
                    continue
                try:
                    message = json.loads(raw["data"])
                except (TypeError, ValueError):
                    continue
                if isinstance(message, dict) and message.get("origin") != ORIGIN:
                    apply(message)
        except Exception:  # noqa: BLE001 - Redis gone: try again shortly
            log.warning("session control listener lost Redis; retrying", exc_info=True)
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
            socketio.sleep(1)


def start(app: Flask) -> None:
    """Start the expiry timer and, with Redis, the control listener (web processes)."""
    socketio.start_background_task(expiry_loop, float(app.config["SESSION_CHECK_SECONDS"]))
    if app.config.get("REDIS_URL"):
        socketio.start_background_task(listen_loop, app)
