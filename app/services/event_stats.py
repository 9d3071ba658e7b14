"""Event pipeline figures for the admin dashboard: events per minute and delivery lag.

Aggregated in SQL (one GROUP BY over the outbox's recent rows), never by loading rows: an
hour at 100 events/s is 360,000 of them. The outbox keeps delivered events for
EVENT_RETENTION_DAYS, far longer than the windows asked for here.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import extract, func, select

from app.extensions import db
from app.models import DomainEvent
from app.models.base import utcnow


def _minute_and_lag():
    """The dialect's "start of the minute" and "commit to delivered in ms" expressions."""
    created, delivered = DomainEvent.created_at, DomainEvent.delivered_at
    if db.engine.dialect.name == "postgresql":
        return (func.to_char(func.date_trunc("minute", created), 'YYYY-MM-DD"T"HH24:MI'),
                extract("epoch", delivered - created) * 1000.0)
    # SQLite stores UTC as text; julianday differences are in days.
    return (func.strftime("%Y-%m-%dT%H:%M", created),
            (func.julianday(delivered) - func.julianday(created)) * 86400000.0)


def pipeline_stats(*, minutes: int, now: datetime | None = None) -> dict:
    """Per minute of the last ``minutes``: events recorded, delivered, average and worst lag."""
    now = now or utcnow()
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    minute, lag = _minute_and_lag()
    rows = db.session.execute(
        select(minute.label("minute"), func.count(), func.count(DomainEvent.delivered_at),
               func.avg(lag), func.max(lag))
        .where(DomainEvent.created_at >= start)
        .group_by("minute")).all()
    by_minute = {key: (total, delivered, avg, worst) for key, total, delivered, avg, worst in rows}
    undelivered = db.session.scalar(
        select(func.count()).select_from(DomainEvent).where(DomainEvent.delivered_at.is_(None))) or 0
    series = []
    for i in range(minutes):
        key = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M")
        total, delivered, avg, worst = by_minute.get(key, (0, 0, None, None))
        series.append({
            "minute": key + ":00Z", "events": total, "delivered": delivered,
            "lag_avg_ms": None if avg is None else round(float(avg), 1),
            "lag_max_ms": None if worst is None else round(float(worst), 1),
        })
    return {"minutes": minutes, "per_minute": series, "undelivered": undelivered}
