"""Celery wired in one place (Flask's own pattern), plus the embedded worker and beat."""
from __future__ import annotations

import importlib
import logging
import threading
from datetime import timedelta

from celery import Celery, Task
from flask import Flask

log = logging.getLogger(__name__)

BEAT_SCHEDULE = {
    "redeliver-events": {"task": "workers.events.redeliver_stale", "schedule": timedelta(seconds=30)},
    "sweep-presence": {"task": "workers.maintenance.sweep_presence", "schedule": timedelta(seconds=30)},
    "purge-events": {"task": "workers.maintenance.purge_events", "schedule": timedelta(hours=1)},
    "purge-activity": {"task": "workers.maintenance.purge_activity", "schedule": timedelta(hours=1)},
    "recover-stuck-jobs": {"task": "workers.jobs.recover_stuck_jobs", "schedule": timedelta(seconds=60)},
    # Notifications: scheduled ones are polled often so they arrive within seconds of
    # deliver_at (the query is one index range scan on deliver_at).
    "notifications-deliver-scheduled": {"task": "workers.notifications.deliver_scheduled",
                                        "schedule": timedelta(seconds=10)},
    "notifications-digests": {"task": "workers.notifications.send_digests",
                              "schedule": timedelta(minutes=5)},
    "notifications-expire": {"task": "workers.notifications.delete_expired",
                             "schedule": timedelta(minutes=10)},
    "notifications-retention": {"task": "workers.notifications.delete_old_read",
                                "schedule": timedelta(hours=1)},
}


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app bound to ``app``; tasks reach it through ``shared_task``."""

    class FlaskTask(Task):
        # Always a fresh app context (and so a fresh Flask-SQLAlchemy session): an eager
        # task runs inside the caller's after_commit hook, where the caller's session can
        # no longer emit SQL; the events it reads are committed, so nothing is hidden.
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    from app import broker_fixes

    broker_fixes.install()  # a worker must survive Redis going away (see the module)
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    scale = app.config.get("BEAT_INTERVAL_SCALE", 1.0)
    celery_app.conf.beat_schedule = {name: {**entry, "schedule": entry["schedule"] * scale}
                                     for name, entry in BEAT_SCHEDULE.items()}
    celery_app.conf.include = ["workers.events", "workers.jobs", "workers.maintenance",
                              "workers.notifications"]
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    for module in celery_app.conf.include:  # register the shared tasks on this app
        importlib.import_module(module)
    return celery_app


def send_task(name: str, *args, **options) -> None:
    """Enqueue a registered task on the current Flask app's own Celery app.

    Not ``task.delay``: a shared task resolves to the process-wide default Celery app, which
    is whichever app was created last; the current Flask app's broker is the right one.
    """
    from flask import current_app

    celery_app: Celery = current_app.extensions["celery"]
    celery_app.tasks[name].apply_async(args=list(args), **options)


def start_embedded_worker(app: Flask, *, concurrency: int = 2) -> None:
    """Run a Celery worker and beat as threads of this process (the embedded default).

    With the in-memory broker only a worker in the same process can see the queue, so
    the one-command start still has working background work.
    """
    from celery.beat import EmbeddedService
    from celery.contrib.testing.worker import TestWorkController

    import workers.events  # noqa: F401 - register the tasks
    import workers.jobs  # noqa: F401
    import workers.maintenance  # noqa: F401
    import workers.notifications  # noqa: F401

    celery_app: Celery = app.extensions["celery"]

    def run_worker() -> None:
        worker = TestWorkController(
            app=celery_app, pool="threads", concurrency=concurrency, loglevel="INFO",
            logfile=None, ready_callback=None, without_heartbeat=True, without_mingle=True,
            without_gossip=True,
        )
        worker.start()

    threading.Thread(target=run_worker, name="embedded-celery-worker", daemon=True).start()
    beat = EmbeddedService(
        celery_app, thread=True,
        schedule_filename=str(app.instance_path) + "/celerybeat-schedule",
    )
    beat.start()
    log.info("embedded Celery worker (%s threads) and beat started", concurrency)
