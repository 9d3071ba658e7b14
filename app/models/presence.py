"""Presence that must last: a user's chosen status, message and last activity.

Sockets, viewers and the shown status are ephemeral and live in the presence store
(``app/services/presence_store.py``: Redis, or process memory), not in tables.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import TimestampMixin, UTCDateTime

STATUSES = ("online", "away", "busy", "do_not_disturb", "offline")


class UserPresence(TimestampMixin, db.Model):
    __tablename__ = "user_presence"
    __table_args__ = (Index("ix_user_presence_last_activity", "last_activity_at"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # The status the user chose; shown while at least one socket is connected
    # ("offline" means invisible).
    chosen_status: Mapped[str] = mapped_column(String(20), nullable=False, default="online")
    message: Mapped[str | None] = mapped_column(String(255))
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
