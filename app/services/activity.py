"""The activity log: written from domain events, read as feeds, history, search, stats."""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, func, insert, select

from app.errors import NotFound, ValidationError
from app.extensions import db
from app.models import ActivityLog, DomainEvent, Episode, File, Job, User, isoformat, utcnow
from app.models.base import insert_for_dialect
from app.serializers import activity_dict
from app.services.batch import rows_by_id
from app.services.transaction import atomic

ACTIONS = (
    "created", "updated", "deleted", "published", "approved", "rejected", "assigned",
    "commented", "uploaded", "exported", "downloaded", "started", "completed", "failed",
    "retried", "cancelled", "retry",
)
RESOURCE_MODELS = {"episode": Episode, "job": Job, "file": File}


def _search_words(*values: Any) -> str:
    words: list[str] = []

    def walk(value: Any) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                words.append(str(key))
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        else:
            words.append(str(value))

    for value in values:
        walk(value)
    return " ".join(words)[:20_000]


def describe(event: DomainEvent, actor: User | None) -> str:
    who = actor.name if actor else "System"
    what = event.resource_type
    name = f" '{event.resource_name}'" if event.resource_name else ""
    text = f"{who} {event.action} {what}{name}"
    if event.changes:
        text += f" ({', '.join(sorted(event.changes))})"
    return text


def row_values_from_event(event: DomainEvent, actor: User | None) -> dict:
    """The activity row an event becomes (pure: used by delivery and tests alike)."""
    description = describe(event, actor)
    return {
        "event_id": event.id,
        "user_id": event.actor_id,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "resource_name": event.resource_name,
        "description": description,
        "changes": event.changes,
        "metadata": {"event": event.name, **(event.payload or {})},
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "search_text": _search_words(
            event.action, event.name, event.resource_type, event.resource_name,
            actor.name if actor else None, description, event.payload,
            sorted(event.changes) if event.changes else None,
        ),
        "created_at": event.created_at,
        "updated_at": utcnow(),
    }


def log_events(events: list[DomainEvent]) -> None:
    """Write the activity rows of a batch of events in one executemany.

    Idempotent on the event id: ``ON CONFLICT DO NOTHING`` skips the rows an earlier
    delivery (or a concurrent deliverer: SQLite has no SKIP LOCKED) already wrote, so no
    SELECT of what exists goes first. No RETURNING on purpose: psycopg sends an executemany
    as one pipelined round trip, and measured on 15 rows that costs a quarter less client
    CPU than SQLAlchemy's multi-row "insertmanyvalues" form.
    """
    wanted = [e for e in events if e.action]
    if not wanted:
        return
    actors = rows_by_id(User, (e.actor_id for e in wanted))
    rows = [row_values_from_event(event, actors.get(event.actor_id)) for event in wanted]
    db.session.execute(
        insert_for_dialect(ActivityLog.__table__).on_conflict_do_nothing(index_elements=["event_id"]),
        rows)


def bulk_log(entries: Iterable[dict]) -> int:
    """Log many actions with one INSERT (imports, system jobs); returns the row count."""
    now = utcnow()
    rows = []
    for entry in entries:
        if entry.get("action") not in ACTIONS:
            raise ValidationError("Invalid action", details={"action": [str(entry.get("action"))]})
        rows.append({
            "event_id": None,
            "user_id": entry.get("user_id"),
            "action": entry["action"],
            "resource_type": entry["resource_type"],
            "resource_id": entry.get("resource_id"),
            "resource_name": entry.get("resource_name"),
            "description": entry.get("description", ""),
            "changes": entry.get("changes"),
            "metadata": entry.get("metadata") or {},
            "ip_address": entry.get("ip_address"),
            "user_agent": entry.get("user_agent"),
            "search_text": _search_words(entry["action"], entry["resource_type"],
                                         entry.get("resource_name"), entry.get("description"),
                                         entry.get("metadata")),
            "created_at": entry.get("created_at") or now,
            "updated_at": now,
        })
    if rows:
        with atomic():
            db.session.execute(insert(ActivityLog.__table__), rows)
    return len(rows)


# ---- reading ---------------------------------------------------------------------------


def filtered(query, *, user_id=None, action=None, resource_type=None, resource_id=None,
             since: datetime | None = None, until: datetime | None = None):
    if user_id is not None:
        query = query.where(ActivityLog.user_id == user_id)
    if action:
        query = query.where(ActivityLog.action == action)
    if resource_type:
        query = query.where(ActivityLog.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(ActivityLog.resource_id == resource_id)
    if since is not None:
        query = query.where(ActivityLog.created_at >= since)
    if until is not None:
        query = query.where(ActivityLog.created_at < until)
    return query


def check_resource_visible(viewer: User, resource_type: str, resource_id: int) -> None:
    """Anyone may read a live resource's history (viewers read); only admins a deleted one."""
    model = RESOURCE_MODELS.get(resource_type)
    if model is None:
        raise NotFound("Unknown resource type")
    if viewer.is_admin:
        return
    if db.session.get(model, resource_id) is None:
        raise NotFound("Resource not found")


# Outside quotes, websearch_to_tsquery skips these characters where it expects a word, and
# reads each "-" there as NOT: "- - -x" or "-!-(-x" nest one NOT per dash, and past 32 its
# parser fails ("tsquery stack too small", a 500). So they become spaces and a run of
# NOTs becomes its parity (NOT NOT x is x): the same query, never more than one NOT deep.
_TS_IGNORED = re.compile(r"[!&|()<]")
_TS_NOT_RUN = re.compile(r"(?<!\S)-(?:\s*-)*")


def websearch_text(q: str) -> str:
    """``q`` rewritten so PostgreSQL's websearch parser can always read it, same meaning."""
    parts = q.split('"')
    for i in range(0, len(parts), 2):  # even parts are outside quotes
        text = _TS_IGNORED.sub(" ", parts[i])
        parts[i] = _TS_NOT_RUN.sub(lambda m: "-" if m.group().count("-") % 2 else " ", text)
    return '"'.join(parts)


def search_condition(q: str):
    """Full-text match on PostgreSQL (GIN index), every word LIKE-matched on SQLite."""
    words = [w for w in q.split() if w]
    if not words:
        raise ValidationError("A search query is required", details={"q": ["Must not be empty."]})
    if "\x00" in q:  # no text value can hold NUL on PostgreSQL; reject it on both databases
        raise ValidationError("Invalid search query", details={"q": ["Must not contain NUL."]})
    if db.engine.dialect.name == "postgresql":
        vector = func.to_tsvector("english", ActivityLog.search_text)
        return vector.op("@@")(func.websearch_to_tsquery("english", websearch_text(q)))
    lowered = func.lower(ActivityLog.search_text)
    return db.and_(*[lowered.like(f"%{w.lower()}%", escape="\\") for w in
                     (x.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                      for x in words)])


def _day(column):
    if db.engine.dialect.name == "postgresql":
        return cast(func.date(func.timezone("UTC", column)), String)
    return func.date(column)


def stats(*, since: datetime | None, until: datetime | None, user_id: int | None) -> dict:
    """Counts by action, resource type, user and day over a range."""
    base = filtered(select(), user_id=user_id, since=since, until=until)

    def counts(column) -> dict:
        query = base.add_columns(column, func.count()).select_from(ActivityLog).group_by(column)
        return {str(key) if key is not None else "system": n
                for key, n in db.session.execute(query)}

    day = _day(ActivityLog.created_at)
    by_day_query = (base.add_columns(day.label("day"), func.count()).select_from(ActivityLog)
                    .group_by("day").order_by("day"))
    by_day = [{"date": str(d), "count": n} for d, n in db.session.execute(by_day_query)]
    total = db.session.scalar(base.add_columns(func.count()).select_from(ActivityLog)) or 0
    return {
        "since": isoformat(since),
        "until": isoformat(until),
        "total": total,
        "by_action": counts(ActivityLog.action),
        "by_resource_type": counts(ActivityLog.resource_type),
        "by_user": counts(ActivityLog.user_id),
        "by_day": by_day,
    }


def dashboard(*, days: int, user_id: int | None, show_client: bool = False) -> dict:
    since = utcnow() - timedelta(days=days)
    summary = stats(since=since, until=None, user_id=user_id)
    recent_q = filtered(select(ActivityLog), user_id=user_id, since=since)
    recent = list(db.session.scalars(recent_q.order_by(ActivityLog.id.desc()).limit(10)))
    users = users_by_id(r.user_id for r in recent)
    top_users = sorted(((k, v) for k, v in summary["by_user"].items()), key=lambda kv: -kv[1])[:5]
    return {
        "days": days,
        **summary,
        "top_users": [{"user_id": k, "count": v} for k, v in top_users],
        "recent": [activity_dict(r, users, show_client=show_client) for r in recent],
    }


def users_by_id(ids: Iterable[int | None]) -> dict[int, User]:
    """The users with these ids (one query; within a delivery batch, its cached rows)."""
    return {uid: user for uid, user in rows_by_id(User, ids).items() if user is not None}


def purge_older_than(days: int, *, batch_size: int = 5000) -> int:
    """Delete activity past retention in batches (short transactions, no long locks)."""
    cutoff = utcnow() - timedelta(days=days)
    total = 0
    while True:
        with atomic():  # one short transaction per batch
            ids = list(db.session.scalars(
                select(ActivityLog.id).where(ActivityLog.created_at < cutoff).limit(batch_size)))
            if ids:
                db.session.execute(delete(ActivityLog).where(ActivityLog.id.in_(ids)))
        if not ids:
            return total
        total += len(ids)

