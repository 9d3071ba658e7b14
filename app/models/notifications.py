"""The inbox and per-user notification preferences."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import NO_ID_REUSE, JSONType, TimestampMixin, UTCDateTime

PRIORITIES = ("critical", "high", "normal", "low")


class Notification(TimestampMixin, db.Model):
    __tablename__ = "notifications"
    __table_args__ = (
        # Re-delivering an event creates no duplicate.
        UniqueConstraint("user_id", "event_id", name="uq_notifications_user_event"),
        Index("ix_notifications_user_read", "user_id", "read_at"),
        Index("ix_notifications_user_created", "user_id", "created_at"),
        # The inbox: a user's newest first by id (cursor pagination); without it the first
        # page of a large inbox walks the primary key past every other user's newer rows.
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index("ix_notifications_created_at", "created_at"),
        Index("ix_notifications_expires_at", "expires_at"),
        Index("ix_notifications_priority", "priority"),
        Index("ix_notifications_deliver_at", "deliver_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    data: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    priority: Mapped[str] = mapped_column(String(10), nullable=False, default="normal")
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deliver_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    digest_pending: Mapped[bool] = mapped_column(default=False, nullable=False)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("domain_events.id", ondelete="SET NULL")
    )


class NotificationPreference(TimestampMixin, db.Model):
    __tablename__ = "notification_preferences"
    __table_args__ = (NO_ID_REUSE,)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    muted_types: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    channels: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    quiet_hours_start: Mapped[str | None] = mapped_column(String(5))
    quiet_hours_end: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    digest_frequency: Mapped[str] = mapped_column(String(10), nullable=False, default="none")
    last_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
