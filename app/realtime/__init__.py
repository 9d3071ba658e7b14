"""Socket.IO: namespaces, authentication, rooms, emits."""
from __future__ import annotations

from flask import Flask

from app.extensions import socketio


def cors_origins(app: Flask) -> list[str] | str:
    raw = (app.config.get("CORS_ORIGINS") or "").strip()
    if raw == "*":
        return "*"
    return [origin.strip() for origin in raw.split(",") if origin.strip()]


def init_realtime(app: Flask) -> None:
    """Bind Socket.IO; with REDIS_URL every process shares one message queue."""
    socketio.init_app(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        message_queue=app.config.get("REDIS_URL"),
        cors_allowed_origins=cors_origins(app),
    )
