"""Job processing tasks: run a job, sweep stuck jobs, announce a worker coming up.

Thin Celery adapters over ``app.jobs.runner`` and ``app.jobs.service``; the app context
comes from the ``FlaskTask`` base class, never from importing the app here.
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.contrib.testing.worker import test_worker_started
from celery.signals import worker_ready
from flask import current_app

from app.extensions import db
from app.jobs import runner
from app.jobs import service as job_service
from app.tasks import JOBS, consumed_queues

log = logging.getLogger(__name__)


# acks_late: a worker killed mid-job leaves the message to be redelivered; running it
# again is safe because the claim is atomic (a job still marked running is skipped and
# left to the stale-job sweep).
@shared_task(name="workers.jobs.run_job", acks_late=True, ignore_result=True)
def run_job(job_id: int) -> str:
    """Run one attempt of a job: queued → running → completed | failed | cancelled | queued."""
    return runner.run(job_id)


@shared_task(name="workers.jobs.recover_stuck_jobs", ignore_result=True)
def recover_stuck_jobs(timeout_seconds: int | None = None) -> dict:
    """Beat: take back jobs a dead worker left running; re-send long-queued jobs' tasks."""
    config = current_app.config
    timeout = timeout_seconds if timeout_seconds is not None else config["JOB_RUNNING_TIMEOUT_SECONDS"]
    recovered = job_service.recover_stuck_jobs(timeout_seconds=timeout)
    resent = job_service.resend_stale_queued(timeout_seconds=config["JOB_QUEUED_TIMEOUT_SECONDS"])
    return {"recovered": recovered, "resent": resent}


@shared_task(name="workers.jobs.announce_processor", ignore_result=True)
def announce_processor(hostname: str, concurrency: int, max_concurrent: int) -> int:
    """Record ``job_processor_started`` (to /jobs and /admin) when a worker comes up."""
    event_id = job_service.record_processor_started(
        hostname=hostname, concurrency=concurrency, max_concurrent=max_concurrent)
    # Called in the prefork parent: drop its pooled connections so pool children forked
    # later (max-tasks-per-child, autoscale) never share a database socket with it.
    db.engine.dispose()
    return event_id


def _announce(consumer) -> None:
    if JOBS not in consumed_queues(consumer.app):
        return  # a worker for events, notifications or maintenance runs no jobs
    controller = getattr(consumer, "controller", None)
    concurrency = int(getattr(controller, "concurrency", None) or 1)
    max_concurrent = int(getattr(controller, "max_concurrency", None) or concurrency)
    task = consumer.app.tasks.get(announce_processor.name)
    if task is None:  # a worker of another Celery app
        return
    try:
        # Calling the task runs it here, inside the FlaskTask app context.
        task(hostname=consumer.hostname, concurrency=concurrency, max_concurrent=max_concurrent)
    except Exception:  # noqa: BLE001 - an announcement never stops a worker from starting
        log.exception("could not announce the job processor")


@worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    _announce(sender)


@test_worker_started.connect
def _on_embedded_worker_started(sender=None, consumer=None, **_kwargs) -> None:
    """The embedded worker (app.tasks.start_embedded_worker) sends this instead."""
    _announce(consumer)
