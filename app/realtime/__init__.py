"""Socket.IO: namespaces, authentication, rooms, emits."""
from __future__ import annotations

from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry
from socketio import RedisManager

from app.extensions import socketio
from app.realtime.manager import IndexedManager, IndexedRedisManager
from app.security import cors_origins

CHANNEL = "flask-socketio"  # the Redis channel every web process and worker shares


def init_realtime(app: Flask) -> None:
    """Bind Socket.IO; with REDIS_URL every process shares one message queue."""
    options: dict = {
        "async_mode": app.config["SOCKETIO_ASYNC_MODE"],
        # None is python-engineio's same-origin check; [] would turn the check off.
        "cors_allowed_origins": cors_origins(app),
        "ping_interval": app.config["SOCKETIO_PING_INTERVAL"],
        "ping_timeout": app.config["SOCKETIO_PING_TIMEOUT"],
    }
    url = app.config.get("SOCKETIO_MESSAGE_QUEUE")
    # No client-side retries (redis-py's default retries a command ten times with backoff)
    # and a short connect timeout: a publish to a dead Redis fails at once, the delivery
    # is postponed, the outbox keeps the event. No read timeout for the listener, whose
    # subscribe connection is idle between messages.
    redis_options = {"socket_connect_timeout": app.config["REDIS_CONNECT_TIMEOUT"] * 4,
                     "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}
    if url and app.config.get("SOCKETIO_WRITE_ONLY"):
        # Celery workers only publish to the queue; they never listen or serve clients.
        options["client_manager"] = RedisManager(
            url, channel=CHANNEL, write_only=True,
            redis_options=redis_options | {"socket_timeout": app.config["REDIS_SOCKET_TIMEOUT"] * 5})
    elif url and url.startswith(("redis://", "rediss://")):
        options["client_manager"] = IndexedRedisManager(url, channel=CHANNEL,
                                                        redis_options=redis_options)
    elif url:  # another kind of queue: Flask-SocketIO's own manager for it
        options["message_queue"] = url
    else:
        options["client_manager"] = IndexedManager()
    # Here, not at the top: ``app.realtime.emit`` (imported by services) runs this package
    # first, and the handlers below import those services.
    from app.realtime import connections, control
    from app.realtime.namespaces import register_namespaces
    from app.services import replay

    register_namespaces()
    connections.reset()
    control.reset()
    replay.reset_local()
    socketio.init_app(app, **options)
