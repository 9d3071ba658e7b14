"""A user's notification preferences: muted types, channels, quiet hours, time zone, digests."""
from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from app.errors import ValidationError
from app.extensions import db
from app.models import NotificationPreference, User
from app.services.batch import batch_cache
from app.services.notifications.catalog import CHANNELS, DEFAULT_CHANNELS
from app.services.notifications.sql import id_in
from app.services.transaction import atomic

DIGEST_PERIODS: dict[str, timedelta | None] = {
    "none": None, "hourly": timedelta(hours=1), "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
}


def parse_hhmm(value: str | None) -> time | None:
    """``"22:30"`` → time(22, 30); None or malformed → None (validated at the API)."""
    if not value:
        return None
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        return None


def valid_timezone(name: str) -> bool:
    """An IANA zone name ("Europe/Paris", "UTC"), not a file path the tz database also
    happens to hold ("localtime", "posix/...", "right/..." with leap seconds)."""
    if name not in _available_timezones():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.cache
def _available_timezones() -> frozenset[str]:
    not_zones = {"localtime", "posixrules", "Factory"}  # files in the tz database, not zones
    return frozenset(zoneinfo.available_timezones() - not_zones) | {"UTC"}


@dataclass(frozen=True)
class Prefs:
    """A user's preferences as :func:`should_notify` reads them (defaults without a row)."""

    muted_types: frozenset[str] = frozenset()
    channels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    quiet_start: time | None = None
    quiet_end: time | None = None
    timezone: str = "UTC"
    digest_frequency: str = "none"

    @classmethod
    def from_row(cls, row: NotificationPreference | None) -> Prefs:
        if row is None:
            return cls()
        return cls(
            muted_types=frozenset(row.muted_types or ()),
            channels={k: tuple(v) for k, v in (row.channels or {}).items()},
            quiet_start=parse_hhmm(row.quiet_hours_start),
            quiet_end=parse_hhmm(row.quiet_hours_end),
            timezone=row.timezone or "UTC",
            digest_frequency=row.digest_frequency or "none",
        )

    def channels_for(self, notification_type: str) -> tuple[str, ...]:
        if notification_type in self.channels:
            return self.channels[notification_type]
        return DEFAULT_CHANNELS.get(notification_type, ("in_app",))


def load_prefs(user_ids: Iterable[int]) -> dict[int, Prefs]:
    """Preferences of many users (defaults for those without a row), in chunked queries.

    Within a delivery batch they are read once: the rows are stored and then pushed by the
    same batch, both of which need them.
    """
    ids = sorted(set(user_ids))
    cached: dict[int, Prefs] = batch_cache().setdefault("prefs", {})
    missing = [uid for uid in ids if uid not in cached]
    found: dict[int, Prefs] = {}
    for condition in id_in(NotificationPreference.user_id, missing):
        for row in db.session.scalars(select(NotificationPreference).where(condition)):
            found[row.user_id] = Prefs.from_row(row)
    cached.update({uid: found.get(uid, Prefs()) for uid in missing})
    return {uid: cached[uid] for uid in ids}


def _pref_row(user_id: int) -> NotificationPreference | None:
    return db.session.scalar(select(NotificationPreference)
                             .where(NotificationPreference.user_id == user_id))


def get_preferences(user: User) -> NotificationPreference | None:
    """The caller's preference row (None: all defaults; the API fills them in)."""
    return _pref_row(user.id)


def update_preferences(user: User, data: Mapping[str, Any]) -> NotificationPreference:
    """Change the fields given (validated by the API schema); others keep their value."""
    with atomic(keep_state=True):
        row = _pref_row(user.id)
        if row is None:
            row = NotificationPreference(user_id=user.id, muted_types=[], channels={},
                                         timezone="UTC", digest_frequency="none")
            db.session.add(row)
        if "muted_types" in data:
            row.muted_types = sorted(set(data["muted_types"]))
        if "channels" in data:
            merged = dict(row.channels or {})
            for notification_type, channels in data["channels"].items():
                merged[notification_type] = [c for c in CHANNELS if c in set(channels)]
            row.channels = merged
        if "quiet_hours" in data:
            quiet = data["quiet_hours"]
            row.quiet_hours_start = quiet["start"] if quiet else None
            row.quiet_hours_end = quiet["end"] if quiet else None
        if "timezone" in data:
            if not valid_timezone(data["timezone"]):
                raise ValidationError("Unknown time zone", details={"timezone": ["Unknown time zone."]})
            row.timezone = data["timezone"]
        if "digest_frequency" in data:
            row.digest_frequency = data["digest_frequency"]
    return row
