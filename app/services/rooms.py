"""Which rooms a socket may join: the row a typed join or subscribe names must exist.

The socket handlers ask here instead of reading Episode and Job rows themselves (the same
check as the REST read: every role reads episodes and jobs).
"""
from __future__ import annotations

import time

from sqlalchemy import select

from app.extensions import db
from app.models import Episode, Job
from app.realtime.emit import episode_room, job_room

_episodes_seen: dict[int, float] = {}
EPISODE_CACHE_SECONDS = 5.0


def episode_exists(episode_id: int) -> bool:
    """Whether the episode exists, remembered for a few seconds per process: a storm of
    joins to one episode reads its row once, not once per join. The connection goes back to
    the pool at once (nothing else of the join needs the database)."""
    seen = _episodes_seen.get(episode_id)
    if seen is not None and time.monotonic() - seen < EPISODE_CACHE_SECONDS:
        return True
    try:
        found = db.session.scalar(select(Episode.id).where(Episode.id == episode_id)) is not None
    finally:
        db.session.close()
    if found:
        if len(_episodes_seen) > 10_000:
            _episodes_seen.clear()
        _episodes_seen[episode_id] = time.monotonic()
    return found


def subscription_room(*, job_id: int | None, episode_id: int | None) -> str | None:
    """The /jobs room a ``subscribe`` names: the job's if it exists, else the episode's if
    that exists, else None."""
    if job_id is not None:
        try:
            found = db.session.get(Job, job_id) is not None
        finally:
            db.session.close()
        if found:
            return job_room(job_id)
    if episode_id is not None and episode_exists(episode_id):
        return episode_room(episode_id)
    return None
