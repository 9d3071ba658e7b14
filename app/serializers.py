"""Plain-dict views of rows (the API edge's ``*_dict``), also used in event payloads.

Below the services (it reads only models), so a service may put a row's dict in an event
and a view may answer with it; the services themselves no longer define any.
"""
from __future__ import annotations

from app.models import ActivityLog, Episode, File, Job, User, isoformat


def user_dict(user: User) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "is_active": user.is_active,
        "created_at": isoformat(user.created_at),
    }


def episode_dict(episode: Episode) -> dict:
    return {
        "id": episode.id,
        "title": episode.title,
        "episode_number": episode.episode_number,
        "season": episode.season,
        "description": episode.description,
        "categories": list(episode.categories or []),
        "status": episode.status,
        "published_at": isoformat(episode.published_at),
        "created_by": episode.created_by,
        "created_at": isoformat(episode.created_at),
        "updated_at": isoformat(episode.updated_at),
    }


def job_dict(job: Job) -> dict:
    return {
        "id": job.id,
        "type": job.type,
        "episode_id": job.episode_id,
        "params": job.params or {},
        "status": job.status,
        "progress": job.progress,
        "result": job.result,
        "error": job.error,
        "retry_count": job.retry_count,
        "max_retries": job.max_retries,
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
        "created_at": isoformat(job.created_at),
        "updated_at": isoformat(job.updated_at),
    }


def file_dict(file: File) -> dict:
    return {
        "id": file.id,
        "episode_id": file.episode_id,
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "sha256": file.sha256,
        "uploaded_by": file.uploaded_by,
        "created_at": isoformat(file.created_at),
        "updated_at": isoformat(file.updated_at),
    }


def activity_dict(row: ActivityLog, users: dict[int, User] | None = None, *,
                  show_client: bool = False) -> dict:
    """An activity row as the API shows it.

    ``show_client`` (admins only) fills ``ip_address`` and ``user_agent``; for everyone
    else they are null: where a person works from is personal data, not team activity.
    """
    user = (users or {}).get(row.user_id) if row.user_id else None
    return {
        "id": row.id,
        "event_id": row.event_id,
        "user_id": row.user_id,
        "user": {"id": user.id, "name": user.name} if user else None,
        "action": row.action,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "resource_name": row.resource_name,
        "description": row.description,
        "changes": row.changes,
        "metadata": row.meta or {},
        "ip_address": row.ip_address if show_client else None,
        "user_agent": row.user_agent if show_client else None,
        "created_at": isoformat(row.created_at),
    }
