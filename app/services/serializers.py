"""Plain-dict views of rows, shared by the REST API, events and Socket.IO payloads."""
from __future__ import annotations

from app.models import Episode, File, Job, User, isoformat


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
