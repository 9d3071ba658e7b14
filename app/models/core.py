"""Users, episodes, jobs, files and the token blocklist."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models.base import NO_ID_REUSE, JSONType, TimestampMixin, UTCDateTime

ROLES = ("admin", "editor", "viewer")
EPISODE_STATUSES = ("draft", "in_review", "published", "archived")
JOB_STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def normalize_email(email: str) -> str:
    """Emails are stored and compared trimmed and lower-cased (also the login rate-limit key)."""
    return email.strip().lower()


class User(TimestampMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin','editor','viewer')", name="role"),
                      NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="viewer", index=True)
    is_active: Mapped[bool] = mapped_column(default=True, nullable=False)

    def set_password(self, password: str) -> None:
        """Hash with werkzeug's scrypt default."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "editor")


class Episode(TimestampMixin, db.Model):
    __tablename__ = "episodes"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft','in_review','published','archived')", name="status"
        ),
        Index("ix_episodes_created_by", "created_by"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    episode_number: Mapped[int] = mapped_column(Integer, nullable=False)
    season: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    categories: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="draft", index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    creator: Mapped[User | None] = relationship(lazy="joined")
    jobs: Mapped[list[Job]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", passive_deletes=True
    )
    files: Mapped[list[File]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", passive_deletes=True
    )


class Job(TimestampMixin, db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued','running','completed','failed','cancelled')", name="status"
        ),
        Index("ix_jobs_episode_id", "episode_id"),
        Index("ix_jobs_status_updated", "status", "updated_at"),
        Index("ix_jobs_created_by", "created_by"),
        # The per-user cap counts a user's queued + running jobs: this index holds only
        # those, so the count never walks the user's finished history.
        Index("ix_jobs_active_created_by", "created_by",
              postgresql_where=text("status IN ('queued', 'running')"),
              sqlite_where=text("status IN ('queued', 'running')")),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    episode_id: Mapped[int] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False
    )
    params: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")
    progress: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    result: Mapped[dict | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    cancel_requested: Mapped[bool] = mapped_column(default=False, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    episode: Mapped[Episode] = relationship(back_populates="jobs")


class File(TimestampMixin, db.Model):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_episode_id", "episode_id"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False
    )
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    stored_name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    episode: Mapped[Episode] = relationship(back_populates="files")


class RevokedToken(db.Model):
    """The database token blocklist, used when Redis is not configured."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (UniqueConstraint("jti"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
