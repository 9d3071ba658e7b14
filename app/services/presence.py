"""Presence: who is online, with what status, viewing what. State lives in the database,
so every web process sees the same picture."""
from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import PresenceSocket, User


def viewers_of(resource_type: str, resource_id: int) -> list[dict]:
    """Users with at least one socket viewing the resource now (one entry per user)."""
    rows = db.session.execute(
        select(User.id, User.name)
        .join(PresenceSocket, PresenceSocket.user_id == User.id)
        .where(PresenceSocket.resource_type == resource_type,
               PresenceSocket.resource_id == resource_id)
        .distinct()
        .order_by(User.id)
    )
    return [{"id": uid, "name": name} for uid, name in rows]
