"""Celery wired in one place (Flask's own pattern): queues and routes, the embedded workers and beat."""
from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta

from celery import Celery, Task
from celery.beat import EmbeddedService
from celery.contrib.testing.worker import TestWorkController
from flask import Flask, current_app
from kombu import Exchange, Queue

from app import broker_fixes, logs

log = logging.getLogger(__name__)

# Four queues, so that work of one kind never waits behind another: an event is never
# queued behind a 20-minute job, and a broadcast's pushes never hold up the outbox.
EVENTS, NOTIFICATIONS, JOBS, MAINTENANCE = "events", "notifications", "jobs", "maintenance"
QUEUES = (EVENTS, NOTIFICATIONS, JOBS, MAINTENANCE)
# Every task is routed by name (tests/test_queues.py checks that none is left to the
# default); exact names win over the patterns (Celery's MapRoute).
TASK_ROUTES = {
    "workers.events.*": {"queue": EVENTS},
    "workers.notifications.*": {"queue": NOTIFICATIONS},
    "workers.jobs.run_job": {"queue": JOBS},
    # The stuck-job sweep must run while every job thread is busy: not behind the jobs.
    "workers.jobs.*": {"queue": MAINTENANCE},
    "workers.maintenance.*": {"queue": MAINTENANCE},
}
# Served by the worker next to the web process (README: one worker for these, one for jobs).
NON_JOB_QUEUES = (EVENTS, NOTIFICATIONS, MAINTENANCE)

BEAT_SCHEDULE = {
    "redeliver-events": {"task": "workers.events.redeliver_stale", "schedule": timedelta(seconds=30)},
    "sweep-presence": {"task": "workers.maintenance.sweep_presence", "schedule": timedelta(seconds=30)},
    "purge-events": {"task": "workers.maintenance.purge_events", "schedule": timedelta(hours=1)},
    "purge-activity": {"task": "workers.maintenance.purge_activity", "schedule": timedelta(hours=1)},
    "purge-refresh-tokens": {"task": "workers.maintenance.purge_refresh_tokens",
                             "schedule": timedelta(hours=1)},
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


def _make_celery(app: Flask, *, set_as_current: bool = True) -> Celery:
    """A Celery app configured for ``app``: its broker, queues, routes and beat schedule."""

    class FlaskTask(Task):
        # Always a fresh app context (and so a fresh Flask-SQLAlchemy session): an eager
        # task runs inside the caller's after_commit hook, where the caller's session can
        # no longer emit SQL; the events it reads are committed, so nothing is hidden.
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    broker_fixes.install()  # a worker must survive Redis going away (see the module)
    celery_app = Celery(app.name, task_cls=FlaskTask, set_as_current=set_as_current)
    celery_app.config_from_object(app.config["CELERY"])
    # Declared, so a worker started without -Q consumes all four (none is silently unserved).
    celery_app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name)
                                   for name in QUEUES]
    celery_app.conf.task_default_queue = MAINTENANCE
    celery_app.conf.task_routes = TASK_ROUTES
    scale = app.config.get("BEAT_INTERVAL_SCALE", 1.0)
    celery_app.conf.beat_schedule = {name: {**entry, "schedule": entry["schedule"] * scale}
                                     for name, entry in BEAT_SCHEDULE.items()}
    return celery_app


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app bound to ``app``.

    Its tasks are registered by ``workers.register_tasks``, called by the processes that run
    them (``celery_app.py``, ``wsgi.py`` for the embedded worker, the tests), never here:
    the application does not import its workers.
    """
    logs.install_celery_signals()
    celery_app = _make_celery(app)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def enqueue(name: str, *args, **options) -> None:
    """Enqueue a registered task on the current Flask app's own Celery app.

    Not ``task.delay``: a shared task resolves to the process-wide default Celery app, which
    is whichever app was created last; the current Flask app's broker is the right one.
    A process that registered no tasks (a web process beside real workers) sends by name.
    """
    celery_app: Celery = current_app.extensions["celery"]
    task = celery_app.tasks.get(name)
    if task is None:
        celery_app.send_task(name, args=list(args), **options)
    else:
        task.apply_async(args=list(args), **options)


def consumed_queues(celery_app: Celery) -> set[str]:
    """The queues a worker of ``celery_app`` consumes (all four unless ``-Q`` chose some)."""
    return set(celery_app.amqp.queues.consume_from)


def start_embedded_worker(app: Flask, *, concurrency: int = 2, job_concurrency: int = 2) -> None:
    """Run two Celery workers and beat as threads of this process (the embedded default).

    With the in-memory broker only a worker in the same process can see the queue, so
    the one-command start still has working background work. Jobs get their own worker
    and threads: with one pool, two long jobs took every thread and no event was
    delivered until they ended. The jobs worker is a second Celery app on the same
    in-memory broker (its state is process-wide) because a worker's queue selection
    (``-Q``) is state of its Celery app, which two workers of one app would share.
    The caller registers the tasks first (``workers.register_tasks``).
    """
    celery_app: Celery = app.extensions["celery"]
    jobs_app = _make_celery(app, set_as_current=False)
    host = socket.gethostname()

    def run_worker(worker_app: Celery, queues: tuple[str, ...], threads: int, name: str) -> None:
        worker = TestWorkController(
            app=worker_app, queues=list(queues), hostname=f"{name}@{host}", pool="threads",
            concurrency=threads, loglevel="INFO", logfile=None, ready_callback=None,
            without_heartbeat=True, without_mingle=True, without_gossip=True,
        )
        worker.start()

    for worker_app, queues, threads, name in (
            (celery_app, NON_JOB_QUEUES, concurrency, "embedded"),
            (jobs_app, (JOBS,), job_concurrency, "embedded-jobs")):
        threading.Thread(target=run_worker, args=(worker_app, queues, threads, name),
                         name=f"{name}-celery-worker", daemon=True).start()
    beat = EmbeddedService(
        celery_app, thread=True,
        schedule_filename=str(app.instance_path) + "/celerybeat-schedule",
    )
    beat.start()
    log.info("embedded Celery workers (%s threads for %s, %s for jobs) and beat started",
             concurrency, ",".join(NON_JOB_QUEUES), job_concurrency)
