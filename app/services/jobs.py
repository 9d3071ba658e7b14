"""Jobs: rows and state transitions; each transition commits with its domain event."""
from __future__ import annotations

from typing import Any

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Episode, Job, User, utcnow
from app.services import events
from app.services.job_types import validate_params
from app.services.transaction import on_commit


def get_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound("Job not found")
    return job


def _record(job: Job, name: str, action: str, actor: User | None, **payload: Any) -> None:
    events.record(
        name,
        action=action,
        actor=actor,
        resource_type="job",
        resource_id=job.id,
        resource_name=f"{job.type} #{job.id}",
        payload={"job_id": job.id, "episode_id": job.episode_id, "type": job.type,
                 "created_by": job.created_by, **payload},
    )


def enqueue_after_commit(job_id: int) -> None:
    """Send the job to a worker once its queued state is durable."""

    def send() -> None:
        from workers.jobs import run_job  # lazy: workers import app services

        run_job.apply_async(args=[job_id])

    on_commit(db.session(), send)


def create_job(actor: User, data: dict[str, Any]) -> Job:
    spec, params = validate_params(data["type"], data.get("params"))
    if db.session.get(Episode, data["episode_id"]) is None:
        raise NotFound("Episode not found")
    job = Job(
        type=spec.name,
        episode_id=data["episode_id"],
        params=params,
        status="queued",
        max_retries=spec.max_retries,
        created_by=actor.id,
    )
    db.session.add(job)
    db.session.flush()
    _record(job, "job_created", "created", actor)
    enqueue_after_commit(job.id)
    db.session.commit()
    return job


def retry_job(actor: User, job_id: int) -> Job:
    """Manual retry of a failed or cancelled job: back to queued, counters reset."""
    job = get_job(job_id)
    if job.status not in ("failed", "cancelled"):
        raise Conflict(f"A {job.status} job cannot be retried")
    job.status = "queued"
    job.progress = 0
    job.error = None
    job.result = None
    job.cancel_requested = False
    job.started_at = None
    job.finished_at = None
    job.retry_count = 0
    db.session.flush()
    _record(job, "job_retried", "retried", actor, retry_count=job.retry_count)
    enqueue_after_commit(job.id)
    db.session.commit()
    return job


def cancel_job(actor: User, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one stops at its next checkpoint."""
    job = get_job(job_id)
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        db.session.flush()
        _record(job, "job_cancelled", "cancelled", actor)
    elif job.status == "running":
        job.cancel_requested = True
    else:
        raise Conflict(f"A {job.status} job cannot be cancelled")
    db.session.commit()
    db.session.refresh(job)
    return job
