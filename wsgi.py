"""Web entry point: ``python wsgi.py`` serves on HOST/PORT; ``flask --app wsgi`` for the CLI.

Under eventlet or gevent the standard library must be patched before anything else is
imported, so that choice is made here, first.
"""
from __future__ import annotations

import os


def _async_mode() -> str:
    default = "eventlet" if os.environ.get("APP_ENV") == "production" else "threading"
    return os.environ.get("SOCKETIO_ASYNC_MODE", default)


if __name__ == "__main__":
    if _async_mode() == "eventlet":
        # psycopg waits in C unless told otherwise, which would stall the whole hub on
        # every query; wait_select goes through eventlet's green select. (psycopg detects
        # gevent by itself; gevent's select() cannot take fds >= 1024, so not there.)
        os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")
    if _async_mode() == "eventlet":
        import eventlet

        eventlet.monkey_patch()
    elif _async_mode() == "gevent":
        from gevent import monkey

        monkey.patch_all()

from app import create_app  # noqa: E402
from workers import register_tasks  # noqa: E402

app = create_app()
# This process may run the embedded worker (app.server.serve), and a task it enqueues runs
# there: register them. The application itself never imports its workers.
register_tasks(app.extensions["celery"])

if __name__ == "__main__":
    from app.server import serve

    serve(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
