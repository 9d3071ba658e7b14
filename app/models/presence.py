"""Presence: one row per user and one per connected socket, shared by all web processes."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import TimestampMixin, UTCDateTime

STATUSES = ("online", "away", "busy", "do_not_disturb", "offline")


class UserPresence(TimestampMixin, db.Model):
    __tablename__ = "user_presence"
    __table_args__ = (
        Index("ix_user_presence_status", "status"),
        Index("ix_user_presence_last_activity", "last_activity_at"),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="offline")
    # The status the user chose; shown while at least one socket is connected.
    chosen_status: Mapped[str] = mapped_column(String(20), nullable=False, default="online")
    message: Mapped[str | None] = mapped_column(String(255))
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PresenceSocket(TimestampMixin, db.Model):
    """A connected socket: who, where, what it is viewing, when it last said hello."""

    __tablename__ = "presence_sockets"
    __table_args__ = (
        Index("ix_presence_sockets_user", "user_id"),
        Index("ix_presence_sockets_resource", "resource_type", "resource_id"),
        Index("ix_presence_sockets_heartbeat", "last_heartbeat_at"),
    )

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    namespace: Mapped[str] = mapped_column(String(32), nullable=False)
    server_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[int | None] = mapped_column(Integer)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
