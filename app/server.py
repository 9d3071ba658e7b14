"""Running the web process: Socket.IO server, embedded worker, file descriptor limit."""
from __future__ import annotations

import logging
import os
import resource
import signal

from flask import Flask

from app.extensions import socketio

log = logging.getLogger(__name__)


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft RLIMIT_NOFILE toward the hard one so the connection cap is reachable."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(app: Flask, *, host: str, port: int) -> None:
    """Serve HTTP and Socket.IO; start the embedded worker and beat when configured."""
    cap = app.config["MAX_CONNECTIONS"]
    limit = raise_fd_limit(cap * 2 + 256)
    if limit < cap + 64:
        log.warning("file descriptor limit %s is below MAX_CONNECTIONS=%s", limit, cap)
    celery_url = app.extensions["celery"].conf.broker_url or ""
    if app.config.get("EMBEDDED_WORKER") and celery_url.startswith("memory://"):
        from app.tasks import start_embedded_worker

        start_embedded_worker(app)
    from app.realtime.connections import refresh_loop, shutdown_all

    socketio.start_background_task(refresh_loop, app, max(5, app.config["PRESENCE_STALE_SECONDS"] / 3))

    def _cleanup_and_exit() -> None:
        try:
            with app.app_context():
                shutdown_all()
        except Exception:  # noqa: BLE001 - exit anyway; the stale sweep finishes the job
            log.exception("graceful shutdown failed")
        finally:
            # The embedded worker's pool threads would keep the process alive; what they
            # had not finished is still in the outbox and is re-delivered on the next start.
            logging.shutdown()
            os._exit(0)

    def _graceful(signum, _frame):
        # Not inside the handler: under eventlet the handler interrupts a green thread and
        # must not block on sockets; a background task of the server's own kind does it.
        log.info("signal %s: disconnecting clients", signum)
        socketio.start_background_task(_cleanup_and_exit)

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    mode = app.config["SOCKETIO_ASYNC_MODE"]
    kwargs: dict = {"host": host, "port": port}
    if mode == "eventlet":
        # eventlet.wsgi defaults to 1,024 simultaneous connections; make the cap reachable.
        kwargs["max_size"] = cap + 64
    elif mode == "threading":
        kwargs["allow_unsafe_werkzeug"] = True
    log.info("serving on %s:%s (%s)", host, port, mode)
    socketio.run(app, **kwargs)
