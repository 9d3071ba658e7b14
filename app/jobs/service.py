"""Jobs: rows and state transitions; each transition commits with its domain event.

Every transition is a compare-and-set ``UPDATE ... WHERE id = :id AND status = :expected``
checked by its row count, on SQLite and PostgreSQL alike, so two actors racing on one job
(two workers given the same message, a cancel against a claim, the stale-job sweep against
a slow worker) never both win. A worker's attempt is fenced by ``started_at``: once the
sweep has taken a job back, the old attempt's writes match no row and it stops.

Every transition appends its event to the outbox in the same transaction (API and worker
callers alike); ``app/jobs/runner.py`` explains why that alone keeps a job's events in order.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from app import tasks
from app.errors import Conflict, NotFound, RateLimited
from app.extensions import db
from app.jobs.types import validate_params
from app.models import Episode, Job, User, utcnow
from app.services import events
from app.services.transaction import atomic, on_commit

log = logging.getLogger(__name__)

ERROR_MAX_CHARS = 2000


@dataclass(frozen=True)
class JobRef:
    """What every job event names; plain values so a worker holds no ORM rows."""

    id: int
    episode_id: int
    type: str
    created_by: int | None


@dataclass(frozen=True)
class Attempt(JobRef):
    """One claimed run of a job; ``started_at`` fences its writes."""

    params: dict
    retry_count: int
    max_retries: int
    started_at: datetime


def get_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound("Job not found")
    return job


def _spec(job: Job | JobRef, name: str, action: str, actor: User | None, **payload: Any) -> dict:
    """``events.record`` arguments for an event about this job."""
    return {"name": name, "action": action, "actor": actor, "resource_type": "job",
            "resource_id": job.id, "resource_name": f"{job.type} #{job.id}",
            "payload": {"job_id": job.id, "episode_id": job.episode_id, "type": job.type,
                        "created_by": job.created_by, **payload}}


def _record(job: Job | JobRef, name: str, action: str, actor: User | None, **payload: Any) -> int:
    spec = _spec(job, name, action, actor, **payload)
    return events.record(spec.pop("name"), **spec).id


# Transitions are Core statements on the table, not ORM-enabled ``update(Job)``: the ORM's
# bulk-update path (session sync, ORM RETURNING) was a third of a claim's CPU, and these
# writes never touch loaded objects (API callers refresh theirs afterwards).
_JOBS = Job.__table__


def _cas(job_id: int, expect: dict[str, Any], *conditions: Any, **values: Any) -> bool:
    """Set ``values`` on the job only if its columns still equal ``expect``; True if so."""
    values.setdefault("updated_at", utcnow())
    query = update(_JOBS).where(_JOBS.c.id == job_id, *conditions)
    for column, value in expect.items():
        query = query.where(_JOBS.c[column] == value)
    return db.session.execute(query.values(**values)).rowcount == 1


def enqueue_after_commit(job_id: int, *, countdown: float | None = None) -> None:
    """Send the job to a worker once its queued state is durable.

    If the broker is down the job stays queued and the stale-job sweep re-sends it.
    """
    def send() -> None:
        tasks.enqueue("workers.jobs.run_job", job_id, countdown=countdown)

    on_commit(db.session(), send)


# ---- API-side transitions ---------------------------------------------------------------

# pg_advisory_xact_lock(class, user id): "this user's queue"; the class keeps the key apart
# from any other advisory lock (locks taken with one bigint key are a separate space).
_QUEUE_LOCK_CLASS = 1_300_013
# The cap frees up when a job of the user ends; a hint, not a promise.
_CAP_RETRY_AFTER_SECONDS = 10
# Counts at most ``cap`` rows, through ``ix_jobs_active_created_by`` (whose predicate is
# this literal text: with bound values a generic plan could not prove the partial index
# applies), so the work stays bounded however many jobs a user has had.
_COUNT_ACTIVE = select(func.count()).select_from(
    select(_JOBS.c.id).where(_JOBS.c.created_by == bindparam("user_id"),
                             text("jobs.status IN ('queued', 'running')"))
    .limit(bindparam("cap")).subquery())


def _check_queue_cap(user_id: int) -> None:
    """429 ``too_many_queued_jobs`` when the user already has the allowed queued+running jobs.

    On PostgreSQL a transaction-scoped advisory lock per user makes the count and the
    write that follows one step, so concurrent requests cannot both take the last place
    (SQLite runs one writer at a time, the embedded default; the count there can race a
    concurrent create by one job at most per request in flight).
    """
    cap = current_app.config["MAX_QUEUED_JOBS_PER_USER"]
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:cls, :uid)"),
                           {"cls": _QUEUE_LOCK_CLASS, "uid": user_id})
    if db.session.execute(_COUNT_ACTIVE, {"user_id": user_id, "cap": cap}).scalar_one() >= cap:
        db.session.rollback()
        raise RateLimited(
            f"You already have {cap} jobs queued or running, the most allowed",
            code="too_many_queued_jobs",
            details={"max_queued_jobs": cap, "retry_after": _CAP_RETRY_AFTER_SECONDS})


_INSERT_JOB = insert(_JOBS).returning(_JOBS.c.id)


def create_job(actor: User, data: dict[str, Any]) -> Job:
    """Insert a queued job with its ``job_created`` event; enqueue it after commit.

    The busiest write of the API, so one Core ``INSERT ... RETURNING id``: no unit-of-work
    flush, and no SELECT to check the episode exists first (the foreign key checks it; the
    error path pays for the look). Returns the job as a ``Job`` outside the session,
    holding every column just written (all the response needs).
    """
    with atomic():
        spec, params = validate_params(data["type"], data.get("params"))
        _check_queue_cap(actor.id)
        now = utcnow()
        job = Job(type=spec.name, episode_id=data["episode_id"], params=params, status="queued",
                  progress=0, result=None, error=None, retry_count=0, max_retries=spec.max_retries,
                  cancel_requested=False, started_at=None, finished_at=None, created_by=actor.id,
                  created_at=now, updated_at=now)
        try:
            # ``result`` left out: SQL NULL, where an explicit None would store JSON null.
            job.id = db.session.execute(_INSERT_JOB, {
                c.key: getattr(job, c.key) for c in _JOBS.c if c.key not in ("id", "result")
            }).scalar_one()
        except IntegrityError:
            db.session.rollback()
            if db.session.scalar(select(Episode.id).where(Episode.id == data["episode_id"])) is None:
                raise NotFound("Episode not found") from None
            raise
        _record(job, "job_created", "created", actor)
        enqueue_after_commit(job.id)
    return job


def retry_job(actor: User, job_id: int) -> Job:
    """Manual retry of a failed or cancelled job: back to queued, counters reset."""
    with atomic():
        job = get_job(job_id)
        status = job.status
        if status in ("failed", "cancelled") and job.created_by is not None:
            _check_queue_cap(job.created_by)  # back to queued: it counts against its creator
        if status not in ("failed", "cancelled") or not _cas(
            job.id, {"status": status}, status="queued", progress=0, error=None, result=None,
            cancel_requested=False, started_at=None, finished_at=None, retry_count=0,
        ):
            db.session.rollback()
            raise Conflict(f"A {get_job(job_id).status} job cannot be retried")
        _record(job, "job_retried", "retried", actor, retry_count=0)
        enqueue_after_commit(job.id)
    db.session.refresh(job)
    return job


def cancel_job(actor: User, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one stops at its next checkpoint."""
    with atomic():
        job = get_job(job_id)
        if _cas(job.id, {"status": "queued"}, status="cancelled", finished_at=utcnow()):
            _record(job, "job_cancelled", "cancelled", actor)
        elif not _cas(job.id, {"status": "running"}, cancel_requested=True):
            db.session.rollback()
            raise Conflict(f"A {get_job(job_id).status} job cannot be cancelled")
    db.session.refresh(job)
    return job


# ---- worker-side transitions (used by app/jobs/runner.py and the sweep) ----------------


_CLAIM = (
    update(_JOBS).where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == "queued")
    .values(status="running", started_at=bindparam("now"), finished_at=None, progress=0,
            updated_at=bindparam("now"))
    .returning(_JOBS.c.episode_id, _JOBS.c.type, _JOBS.c.created_by, _JOBS.c.params,
               _JOBS.c.retry_count, _JOBS.c.max_retries))


def claim_job(job_id: int) -> Attempt | None:
    """Atomically take a queued job (queued → running, ``job_started``); None if not queued.

    A cancelled, finished or already running job is left alone, so a duplicate or stale
    message never runs a job twice.
    """
    with atomic():
        started_at = utcnow()
        row = db.session.execute(_CLAIM, {"job_id": job_id, "now": started_at}).first()
        if row is None:
            db.session.rollback()
            return None
        attempt = Attempt(job_id, row.episode_id, row.type, row.created_by, dict(row.params or {}),
                          row.retry_count, row.max_retries, started_at)
        _record(attempt, "job_started", "started", None, retry_count=row.retry_count)
        return attempt


def _owned(attempt: Attempt) -> dict:
    return {"status": "running", "started_at": attempt.started_at}


# What a checkpoint finds: carry on, stop for a cancel, or stop because the job was lost.
OK, CANCELLED, LOST = "ok", "cancelled", "lost"


def checkpoint_state(attempt: Attempt) -> str:
    """OK, CANCELLED (a cancel was requested) or LOST (this attempt no longer owns the job).

    Its own unit, so the read ends at once: a handler must not sit idle in a transaction.
    """
    with atomic():
        return _read_state(attempt)


def _read_state(attempt: Attempt) -> str:
    flag = db.session.scalar(
        select(_JOBS.c.cancel_requested).where(
            _JOBS.c.id == attempt.id, _JOBS.c.status == "running",
            _JOBS.c.started_at == attempt.started_at))
    return LOST if flag is None else CANCELLED if flag else OK


def _write_if_ok(attempt: Attempt, **values: Any) -> str:
    """One round trip for the common case: write unless cancelled or lost, then say which.

    Runs inside the caller's unit; a failed write is rolled back before the look.
    """
    if _cas(attempt.id, {**_owned(attempt), "cancel_requested": False}, **values):
        return OK
    db.session.rollback()
    return _read_state(attempt)


def touch(attempt: Attempt) -> str:
    """Heartbeat: tell the stale-job sweep this attempt is alive (also a checkpoint)."""
    with atomic():
        return _write_if_ok(attempt)


def record_progress(attempt: Attempt, percent: int, message: str) -> str:
    """Store progress and append ``job_progress`` (real-time only: no activity row).

    Also the checkpoint: nothing is written once a cancel was requested or the job lost.
    """
    with atomic():
        state = _write_if_ok(attempt, progress=percent)
        if state == OK:
            _record(attempt, "job_progress", "", None, progress=percent, message=message)
    return state


def complete(attempt: Attempt, results: dict, *, final_progress: str | None,
             honour_cancel: bool = False) -> str | None:
    """running → completed with ``job_completed``; "completed", "cancelled" or None (lost).

    ``final_progress`` (a message) appends the 100% ``job_progress`` first when the
    throttle had not sent it yet: clients always see the last progress, in one commit.
    ``honour_cancel``: the handler's last checkpoint (its 100%) left its cancel check to
    this write, which then only succeeds if no cancel was requested (one round trip
    instead of a read then a write).
    """
    expect = {**_owned(attempt), "cancel_requested": False} if honour_cancel else _owned(attempt)
    with atomic():
        if _cas(attempt.id, expect, status="completed", progress=100, result=results,
                error=None, finished_at=utcnow()):
            specs = [_spec(attempt, "job_progress", "", None, progress=100,
                           message=final_progress)] if final_progress is not None else []
            specs.append(_spec(attempt, "job_completed", "completed", None, results=results))
            events.record_many(specs)
            return "completed"
        db.session.rollback()
    if honour_cancel and checkpoint_state(attempt) == CANCELLED:
        return "cancelled" if finish_cancelled(attempt) else None
    return None


def finish_cancelled(attempt: Attempt) -> bool:
    """running → cancelled with ``job_cancelled`` (the handler stopped at a checkpoint)."""
    with atomic():
        if not _cas(attempt.id, _owned(attempt), status="cancelled", finished_at=utcnow()):
            db.session.rollback()
            return False
        _record(attempt, "job_cancelled", "cancelled", None)
        return True


def backoff_seconds(retry_count: int) -> float:
    """Exponential backoff with jitter: base × 2^(n-1), capped, plus up to 25% random.

    The jitter spreads retries of jobs that failed together (a shared dependency down).
    """
    base = current_app.config["JOB_RETRY_BACKOFF_SECONDS"]
    cap = current_app.config["JOB_RETRY_BACKOFF_MAX_SECONDS"]
    delay = min(cap, base * 2 ** max(0, retry_count - 1))
    return round(delay + random.uniform(0, delay / 4), 3)


def format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


def fail_attempt(attempt: Attempt, error: str, *, retryable: bool = True) -> str | None:
    """A handler raised: retry with backoff (``job_retry``) or fail for good (``job_failed``).

    Returns "retry", "failed", "cancelled" (a cancel was pending: honour it rather than
    retry), or None when this attempt no longer owns the job.
    """
    owned = {**_owned(attempt), "retry_count": attempt.retry_count}
    for _ in range(3):  # a cancel landing between the check and the write: look again
        state = checkpoint_state(attempt)
        if state == LOST:
            return None
        if state == CANCELLED:
            return "cancelled" if finish_cancelled(attempt) else None
        if not retryable or attempt.retry_count >= attempt.max_retries:
            break
        retry_count = attempt.retry_count + 1
        delay = backoff_seconds(retry_count)
        with atomic():
            if _cas(attempt.id, {**owned, "cancel_requested": False}, status="queued",
                    retry_count=retry_count, error=error, progress=0):
                _record(attempt, "job_retry", "retry", None, retry_count=retry_count,
                        delay=delay, error=error)
                enqueue_after_commit(attempt.id, countdown=delay)
                return "retry"
            db.session.rollback()
    with atomic():
        if not _cas(attempt.id, owned, status="failed", error=error, finished_at=utcnow()):
            db.session.rollback()
            return None
        _record(attempt, "job_failed", "failed", None, error=error,
                retries_exhausted=retryable, retry_count=attempt.retry_count)
        return "failed"


def recover_stuck_jobs(*, timeout_seconds: int, limit: int = 500) -> list[int]:
    """Take back jobs left running by a dead worker (no heartbeat past the timeout).

    Each one is re-queued counting a retry (``job_retry``), failed once its retries are
    spent (``job_failed``), or cancelled if a cancel was pending. Returns their ids.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=timeout_seconds)
    with atomic():  # the read ends before the per-job units
        rows = db.session.execute(
            select(Job.id, Job.episode_id, Job.type, Job.created_by, Job.started_at,
                   Job.retry_count, Job.max_retries, Job.cancel_requested)
            .where(Job.status == "running", Job.updated_at < cutoff)
            .order_by(Job.id).limit(limit)).all()
    error = f"Worker lost: no heartbeat for {timeout_seconds} s"
    recovered = []
    for row in rows:
        ref = JobRef(row.id, row.episode_id, row.type, row.created_by)
        if row.cancel_requested:
            outcome = {"status": "cancelled", "finished_at": now}
        elif row.retry_count < row.max_retries:
            outcome = {"status": "queued", "retry_count": row.retry_count + 1, "error": error,
                       "progress": 0}
        else:
            outcome = {"status": "failed", "error": error, "finished_at": now}
        if not _recover(ref, row, cutoff, outcome, error):
            continue
        log.warning("job %s was stuck in running: %s (now %s)", row.id, error, outcome["status"])
        recovered.append(row.id)
    return recovered


def _recover(ref: JobRef, row: Any, cutoff: datetime, outcome: dict, error: str) -> bool:
    """One stuck job taken back in its own unit; False if its attempt woke up first."""
    # Only the same attempt, still silent: a heartbeat that lands first wins the race.
    expect = {"status": "running", "started_at": row.started_at,
              "retry_count": row.retry_count, "cancel_requested": row.cancel_requested}
    with atomic():
        if not _cas(row.id, expect, _JOBS.c.updated_at < cutoff, **outcome):
            db.session.rollback()
            return False
        if outcome["status"] == "cancelled":
            _record(ref, "job_cancelled", "cancelled", None, recovered=True)
        elif outcome["status"] == "queued":
            _record(ref, "job_retry", "retry", None, retry_count=row.retry_count + 1, delay=0,
                    error=error, recovered=True)
            enqueue_after_commit(row.id)
        else:
            _record(ref, "job_failed", "failed", None, error=error, retries_exhausted=True,
                    retry_count=row.retry_count, recovered=True)
    return True


def resend_stale_queued(*, timeout_seconds: int, limit: int = 500) -> list[int]:
    """Re-send the task of jobs queued for too long (a message lost with a broker outage).

    The touch moves them out of the next sweep's window; a duplicate message is harmless
    because :func:`claim_job` lets only one through.
    """
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    resent = []
    with atomic():
        rows = db.session.execute(
            select(Job.id, Job.updated_at).where(Job.status == "queued", Job.updated_at < cutoff)
            .order_by(Job.id).limit(limit)).all()
        for row in rows:
            if _cas(row.id, {"status": "queued", "updated_at": row.updated_at}):
                enqueue_after_commit(row.id)
                resent.append(row.id)
    return resent


def record_processor_started(*, hostname: str, concurrency: int, max_concurrent: int) -> int:
    """``job_processor_started``: real-time only (no activity row); delivered by the outbox."""
    with atomic():
        evt = events.record(
            "job_processor_started",
            action="",
            actor=None,
            resource_type="job",
            resource_id=None,
            resource_name=hostname[:255],
            payload={"hostname": hostname, "concurrency": concurrency,
                     "max_concurrent": max_concurrent},
        )
        event_id = evt.id
    return event_id
