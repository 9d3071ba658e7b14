"""The delivery timeline: what happened to an event, and why a user got (or not) a notification.

Rows are written in batches by the delivery code (one INSERT per batch of steps) and go
with their event: the outbox retention purge deletes them (and the foreign keys cascade).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import NO_ID_REUSE, JSONType, UTCDateTime, utcnow


class DeliveryStep(db.Model):
    """One step of an event's delivery: claimed, emitted (rooms), delivered, failed."""

    __tablename__ = "delivery_steps"
    __table_args__ = (Index("ix_delivery_steps_event", "event_id", "id"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("domain_events.id", ondelete="CASCADE"), nullable=False)
    step: Mapped[str] = mapped_column(String(32), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    detail: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)


class NotificationDecision(db.Model):
    """One notification decision for a user and an event, with its reason."""

    __tablename__ = "notification_decisions"
    __table_args__ = (
        Index("ix_notification_decisions_event_user", "event_id", "user_id"),
        Index("ix_notification_decisions_notification", "notification_id"),
        Index("ix_notification_decisions_at", "at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("domain_events.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # No foreign key: a decision outlives a notification the user deleted (it says why).
    notification_id: Mapped[int | None] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    detail: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
