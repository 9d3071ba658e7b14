"""Refresh-token families (one per login session) and outbox watermarks."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import NO_ID_REUSE, TimestampMixin, UTCDateTime


class RefreshToken(TimestampMixin, db.Model):
    """One refresh token of a login session (its ``family``).

    A refresh token is used once: ``POST /auth/refresh`` marks it used and issues the next
    one of the family. A token presented again after that was stolen or replayed, so the
    whole family is revoked (``revoked_at`` on every row): the thief and the victim both
    have to log in again, which is the point (OAuth 2.0 Security BCP, refresh rotation).
    """

    __tablename__ = "refresh_tokens"
    __table_args__ = (UniqueConstraint("jti"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), nullable=False)
    family: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutboxMark(TimestampMixin, db.Model):
    """A named watermark of the outbox, e.g. the highest event id the purge deleted.

    Replay needs it: event ids have gaps (rolled-back inserts), so "the oldest retained
    id" cannot tell whether a client's ``last_event_id`` is still covered by history.
    """

    __tablename__ = "outbox_marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)
