"""Running one attempt of a job: claim, handler, checkpoints, outcome.

State: ``claim_job`` moves queued → running atomically, so a duplicate message, a message
for a cancelled job, or a second worker gets nothing. The handler then runs with a
:class:`JobContext` whose ``progress`` is the throttled progress writer, the heartbeat
and the cooperative cancel point. Its outcome is one more fenced transition: completed,
cancelled, queued again with a backoff (``job_retry``) or failed.

Event order: a job's transitions are sequential compare-and-sets, each committed before
the next one is recorded, so its event ids increase in transition order and commit in that
order. The pipeline emits in id order (``app/services/drain.py``: one drainer at a time, batches
oldest first), so clients receive a job's events in order; envelopes carry those ids, so a
client can also drop a duplicate of an at-least-once delivery. We tried delivering the
job's events inline from this task after each commit (the issue's suggestion) and dropped
it: delivery claims with ``SKIP LOCKED``, so a second deliverer skips an event the drainer
holds and emits a later one first, breaking the very order it meant to keep. Progress is
throttled (a few events per second per job) so a busy job cannot flood that one queue.
"""
from __future__ import annotations

import logging
import time

from flask import current_app

from app import metrics
from app.extensions import db
from app.jobs import service as job_service
from app.jobs import types as job_types
from app.jobs.context import JobCancelled, JobContext, JobLost, PermanentJobError
from app.jobs.service import Attempt

log = logging.getLogger(__name__)


class Checkpoint:
    """``ctx.progress``: the cancel check on every call; progress stored and emitted at most
    once per interval, and a heartbeat write when a long quiet stretch could make the
    stale-job sweep think the worker died.

    If the throttle held back the final 100%, the completion sends it in the same commit as
    ``job_completed``: clients always see the end, and a short job costs one commit less.
    The cancel check of a held-back 100% is left to that completing write too (``deferred``):
    a cancel requested before it still wins, and a short job saves a read and its commit.
    """

    def __init__(self, attempt: Attempt, *, interval: float, heartbeat: float) -> None:
        self.attempt = attempt
        self.interval, self.heartbeat = interval, heartbeat
        self.sent = 0  # the claim stored progress 0
        self.pending: tuple[int, str] | None = None
        self.last_write = time.monotonic()
        self.deferred = False  # the completing write must check for a cancel
        self.reached_100 = False

    def __call__(self, percent: int, message: str) -> None:
        if percent != self.sent:
            self.pending = (percent, message)
        now = time.monotonic()
        if self.pending and now - self.last_write >= self.interval:
            state = job_service.record_progress(self.attempt, *self.pending)
            if state == job_service.OK:
                self.sent, self.pending, self.last_write = self.pending[0], None, now
        elif now - self.last_write >= self.heartbeat:
            state = job_service.touch(self.attempt)
            self.last_write = now
        elif percent == 100 and not self.reached_100:
            # Only the first 100%: a handler still reporting 100% after it (a checksum
            # finding more bytes than recorded) checks at each call as usual.
            self.reached_100 = self.deferred = True
            return
        else:
            state = job_service.checkpoint_state(self.attempt)
        self.deferred = False
        if state == job_service.LOST:
            raise JobLost(f"job {self.attempt.id} was taken back from this attempt")
        if state == job_service.CANCELLED:
            raise JobCancelled()

    def final_progress(self) -> str | None:
        """The message of the 100% progress the completion must still send, if any."""
        if self.sent == 100:
            return None
        return self.pending[1] if self.pending and self.pending[0] == 100 else "Completed"


def run(job_id: int) -> str:
    """Run the job if it can be claimed; returns the outcome (for logs and tests)."""
    attempt = job_service.claim_job(job_id)
    if attempt is None:
        # Not queued: cancelled while waiting, already finished, or running elsewhere
        # (a redelivered message; if that worker is dead, the stale-job sweep takes it back).
        return "skipped"
    started = time.perf_counter()
    outcome = execute(attempt)
    metrics.job_finished(attempt.type, outcome, time.perf_counter() - started)
    return outcome


def execute(attempt: Attempt) -> str:
    """Run the handler of a claimed attempt and commit its outcome."""
    job_id = attempt.id
    config = current_app.config
    checkpoint = Checkpoint(attempt, interval=config["JOB_PROGRESS_INTERVAL_SECONDS"],
                            heartbeat=config["JOB_HEARTBEAT_SECONDS"])
    ctx = JobContext(attempt.id, attempt.episode_id, attempt.type, attempt.params,
                     attempt.retry_count, attempt.created_by, checkpoint)
    try:
        spec = job_types.get_type(attempt.type)
        if spec is None:
            raise PermanentJobError(f"Unknown job type {attempt.type!r}")
        results = spec.handler(ctx)
    except JobCancelled:
        db.session.rollback()
        outcome = "cancelled" if job_service.finish_cancelled(attempt) else None
    except JobLost as exc:
        db.session.rollback()
        log.warning("%s", exc)
        outcome = None
    except PermanentJobError as exc:
        db.session.rollback()
        outcome = job_service.fail_attempt(attempt, str(exc), retryable=False)
    except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
        db.session.rollback()
        log.warning("job %s attempt %s failed: %s", job_id, attempt.retry_count + 1, exc,
                    exc_info=True)
        outcome = job_service.fail_attempt(attempt, job_service.format_error(exc))
    else:
        outcome = job_service.complete(attempt, results or {},
                                       final_progress=checkpoint.final_progress(),
                                       honour_cancel=checkpoint.deferred)
    return outcome or "lost"
