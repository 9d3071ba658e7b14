"""ORM models of every table of the design."""
from app.models.base import JSONType, TimestampMixin, UTCDateTime, isoformat, utcnow
from app.models.core import Episode, File, Job, RevokedToken, User
from app.models.events import ActivityLog, DomainEvent
from app.models.notifications import Notification, NotificationPreference
from app.models.presence import UserPresence
from app.models.sessions import OutboxMark, RefreshToken
from app.models.timeline import DeliveryStep, NotificationDecision

__all__ = [
    "ActivityLog", "DeliveryStep", "DomainEvent", "Episode", "File", "JSONType", "Job", "Notification",
    "NotificationDecision", "NotificationPreference", "OutboxMark", "RefreshToken", "RevokedToken",
    "TimestampMixin", "User",
    "UTCDateTime", "UserPresence", "isoformat", "utcnow",
]
