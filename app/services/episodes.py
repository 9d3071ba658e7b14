"""Episodes: every change commits with its domain event."""
from __future__ import annotations

from typing import Any

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Episode, User, utcnow
from app.serializers import episode_dict
from app.services import events, presence
from app.services import files as file_service
from app.services.transaction import atomic

EDITABLE_FIELDS = ("title", "episode_number", "season", "description", "categories", "status")


def get_episode(episode_id: int) -> Episode:
    episode = db.session.get(Episode, episode_id)
    if episode is None:
        raise NotFound("Episode not found")
    return episode


def get_episode_with_viewers(episode_id: int) -> tuple[Episode, list[dict]]:
    """The episode and who views it now (``GET /episodes/<id>``): one call for the view."""
    episode = get_episode(episode_id)
    return episode, presence.viewers_of("episode", episode_id)


def create_episode(actor: User, data: dict[str, Any]) -> Episode:
    with atomic(keep_state=True):
        episode = Episode(
            title=data["title"],
            episode_number=data["episode_number"],
            season=data.get("season"),
            description=data.get("description"),
            categories=list(data.get("categories") or []),
            status=data.get("status") or "draft",
            created_by=actor.id,
        )
        db.session.add(episode)
        db.session.flush()
        events.record_change("episode_created", action="created", actor=actor, resource=episode,
                             payload={
                                 "episode_id": episode.id,
                                 "title": episode.title,
                                 "categories": episode.categories,
                                 "status": episode.status,
                                 "description": episode.description,
                                 "created_by": actor.id,
                             })
    return episode


def update_episode(actor: User, episode_id: int, data: dict[str, Any]) -> Episode:
    """Apply the changed fields; an update that changes nothing records no event."""
    with atomic(keep_state=True):
        episode = get_episode(episode_id)
        before = episode_dict(episode)
        changes: dict[str, dict] = {}
        for field in EDITABLE_FIELDS:
            if field in data and data[field] != before[field]:
                value = list(data[field] or []) if field == "categories" else data[field]
                changes[field] = {"before": before[field], "after": value}
                setattr(episode, field, value)
        if not changes:
            return episode
        if changes.get("status", {}).get("after") == "published" and episode.published_at is None:
            episode.published_at = utcnow()
        db.session.flush()
        events.record_change("episode_updated", action="updated", actor=actor, resource=episode,
                             payload={
                                 "episode_id": episode.id,
                                 "title": episode.title,
                                 "changed_fields": sorted(changes),
                                 "status": episode.status,
                                 "created_by": episode.created_by,
                                 "updated_by": actor.id,
                                 "episode": episode_dict(episode),
                             }, changes=changes)
    return episode


def publish_episode(actor: User, episode_id: int) -> Episode:
    with atomic(keep_state=True):
        episode = get_episode(episode_id)
        if episode.status == "published":
            raise Conflict("The episode is already published")
        before = episode.status
        episode.status = "published"
        episode.published_at = utcnow()
        db.session.flush()
        events.record_change("episode_published", action="published", actor=actor,
                             resource=episode, payload={
                                 "episode_id": episode.id,
                                 "title": episode.title,
                                 "created_by": episode.created_by,
                                 "published_by": actor.id,
                             }, changes={"status": {"before": before, "after": "published"}})
    return episode


def delete_episode(actor: User, episode_id: int) -> None:
    """Delete the episode; its jobs and files go with it (cascade), bytes after commit."""
    with atomic():
        episode = get_episode(episode_id)
        stored = [f.stored_name for f in episode.files]
        events.record_change("episode_deleted", action="deleted", actor=actor, resource=episode,
                             payload={
                                 "episode_id": episode.id,
                                 "title": episode.title,
                                 "created_by": episode.created_by,
                                 "deleted_by": actor.id,
                             })
        db.session.delete(episode)
        file_service.remove_bytes_after_commit(stored)
