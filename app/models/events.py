"""The outbox of domain events and the activity log written from it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import NO_ID_REUSE, JSONType, TimestampMixin, UTCDateTime


class DomainEvent(TimestampMixin, db.Model):
    """One change, appended in the same transaction as the change itself (the outbox)."""

    __tablename__ = "domain_events"
    __table_args__ = (
        # The re-delivery sweep scans undelivered events by age.
        Index("ix_domain_events_undelivered", "delivered_at", "created_at"),
        Index("ix_domain_events_resource", "resource_type", "resource_id"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    resource_type: Mapped[str] = mapped_column(String(32), nullable=False)
    resource_id: Mapped[int | None] = mapped_column(Integer)
    resource_name: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    changes: Mapped[dict | None] = mapped_column(JSONType)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # The X-Request-ID of the request that recorded it: the worker's log lines name it.
    request_id: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    alerted: Mapped[bool] = mapped_column(default=False, nullable=False)


class ActivityLog(TimestampMixin, db.Model):
    """What a user did, written by the worker from a domain event (one row per event)."""

    __tablename__ = "activity_logs"
    __table_args__ = (
        Index("ix_activity_logs_user_created", "user_id", "created_at"),
        Index("ix_activity_logs_resource", "resource_type", "resource_id"),
        Index("ix_activity_logs_action", "action"),
        Index("ix_activity_logs_created_at", "created_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique: delivering the same event twice writes one row.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("domain_events.id", ondelete="SET NULL"), unique=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    resource_type: Mapped[str] = mapped_column(String(32), nullable=False)
    resource_id: Mapped[int | None] = mapped_column(Integer)
    resource_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    changes: Mapped[dict | None] = mapped_column(JSONType)
    meta: Mapped[dict] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # Words to search: action, resource, names and metadata values. A GIN full-text index
    # over it exists on PostgreSQL (created in the migration); SQLite uses LIKE.
    search_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
