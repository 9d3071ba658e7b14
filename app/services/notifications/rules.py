"""Which domain events notify whom: one table, read top to bottom.

Each :class:`Rule` says: when event ``event`` (and ``when`` holds), send a notification of
``type`` to ``audience`` with ``priority``; its template (the ``catalog``) is
filled from ``variables``. Two conventions keep the table short:

- The actor never hears about their own action (``exclude_actor``), except for job rules:
  a job's creator is the actor of ``job_created`` and is the very person to tell.
- One notification per user per event (the ``(user_id, event_id)`` unique constraint makes
  re-delivery idempotent): when several rules reach the same user, the first rule wins, so
  the more specific rules come first.

Mentions: ``@`` followed by a user's name with the spaces removed (``@AdaLovelace`` for
"Ada Lovelace") or the local part of their email (``@ada.l`` for ``ada.l@example.com``),
case-insensitive. Letters, digits, ``.``, ``_`` and ``-`` make up the handle; a trailing
``.`` or ``-`` (end of a sentence) is not part of it. On an update only the mentions the
change added are notified, so re-saving a description does not ping everyone again.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import func, or_, select

from app.extensions import db
from app.models import DomainEvent, Episode, User
from app.services.batch import batch_cache, row_by_id
from app.services.notifications import decisions

MAX_MENTIONS = 50
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9._-]{0,119})")


class Facts:
    """An event plus the rows rules read about it, each loaded at most once."""

    def __init__(self, event: DomainEvent):
        self.event = event
        self.payload: dict = event.payload or {}
        self.changes: dict = event.changes or {}

    @cached_property
    def actor(self) -> User | None:
        return row_by_id(User, self.event.actor_id) if self.event.actor_id else None

    @cached_property
    def episode(self) -> Episode | None:
        episode_id = self.payload.get("episode_id")
        return row_by_id(Episode, episode_id) if episode_id is not None else None

    @cached_property
    def admin_ids(self) -> list[int]:
        # Read once per delivery batch, not once per event.
        cache = batch_cache()
        if "admin_ids" not in cache:
            cache["admin_ids"] = list(db.session.scalars(
                select(User.id).where(User.role == "admin", User.is_active.is_(True))))
        return cache["admin_ids"]

    @property
    def owner_id(self) -> int | None:
        """The episode's owner: from the payload (survives deletion), else the row."""
        if self.event.name.startswith("episode_") and self.payload.get("created_by") is not None:
            return self.payload["created_by"]
        return self.episode.created_by if self.episode is not None else None


# ---- audiences: who a rule reaches ---------------------------------------------------


def admins_and_owner(facts: Facts) -> list[int]:
    return [*facts.admin_ids, *([facts.owner_id] if facts.owner_id else [])]


def admins(facts: Facts) -> list[int]:
    return facts.admin_ids


def episode_owner(facts: Facts) -> list[int]:
    return [facts.owner_id] if facts.owner_id else []


def job_creator(facts: Facts) -> list[int]:
    creator = facts.payload.get("created_by")
    return [creator] if isinstance(creator, int) else []


def mentioned_users(facts: Facts) -> list[int]:
    return sorted(users_mentioned(new_mentions(facts)))


# ---- conditions ------------------------------------------------------------------------


def always(_facts: Facts) -> bool:
    return True


def created_in_review(facts: Facts) -> bool:
    return facts.payload.get("status") == "in_review"


def status_changed_to_in_review(facts: Facts) -> bool:
    return (facts.changes.get("status") or {}).get("after") == "in_review"


def has_new_mentions(facts: Facts) -> bool:
    return bool(new_mentions(facts))


def is_upload(facts: Facts) -> bool:
    return facts.payload.get("source") != "export"


def is_export(facts: Facts) -> bool:
    return facts.payload.get("source") == "export"


# ---- template variables ----------------------------------------------------------------


def _actor_name(facts: Facts) -> str:
    return facts.actor.name if facts.actor is not None else "System"


def _episode_title(facts: Facts) -> str:
    if facts.event.name.startswith("episode_") and facts.payload.get("title"):
        return str(facts.payload["title"])
    if facts.episode is not None:
        return facts.episode.title
    return f"episode #{facts.payload.get('episode_id', '?')}"


def episode_variables(facts: Facts) -> dict[str, str]:
    changed = facts.payload.get("changed_fields") or sorted(facts.changes)
    return {
        "actor_name": _actor_name(facts),
        "episode_title": _episode_title(facts),
        "episode_id": str(facts.payload.get("episode_id", "")),
        "changed_fields": ", ".join(str(f) for f in changed) or "nothing",
    }


def job_variables(facts: Facts) -> dict[str, str]:
    error = str(facts.payload.get("error") or "unknown error")
    return {
        "actor_name": _actor_name(facts),
        "episode_title": _episode_title(facts),
        "job_id": str(facts.payload.get("job_id", "")),
        "job_type": str(facts.payload.get("type") or "job"),
        "error": error if len(error) <= 500 else error[:499] + "…",
    }


def file_variables(facts: Facts) -> dict[str, str]:
    return {
        "actor_name": _actor_name(facts),
        "episode_title": _episode_title(facts),
        "file_name": str(facts.payload.get("file_name") or "a file"),
        "job_id": str(facts.payload.get("job_id", "")),
    }


# ---- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    event: str
    type: str
    audience: Callable[[Facts], Iterable[int]]
    priority: str = "normal"
    when: Callable[[Facts], bool] = always
    variables: Callable[[Facts], dict[str, str]] = episode_variables
    exclude_actor: bool = True
    note: str = field(default="", compare=False)


RULES: tuple[Rule, ...] = (
    # Episodes: admins and the owner hear about lifecycle changes; more specific rules first.
    Rule("episode_created", "approval:needed", admins, "high", when=created_in_review,
         note="created straight into review"),
    Rule("episode_created", "user:mention", mentioned_users, when=has_new_mentions),
    Rule("episode_created", "episode:created", admins_and_owner),
    Rule("episode_updated", "approval:needed", admins, "high", when=status_changed_to_in_review,
         note="an editor asks for publication"),
    Rule("episode_updated", "user:mention", mentioned_users, when=has_new_mentions),
    Rule("episode_updated", "episode:updated", episode_owner, "low",
         note="someone else changed your episode"),
    Rule("episode_deleted", "episode:deleted", admins_and_owner),
    Rule("episode_published", "episode:published", admins_and_owner),
    # Jobs: the creator hears how their job went (they are the actor of job_created).
    Rule("job_created", "job:created", job_creator, "low", variables=job_variables,
         exclude_actor=False),
    Rule("job_completed", "job:completed", job_creator, variables=job_variables,
         exclude_actor=False),
    Rule("job_failed", "job:failed", job_creator, "high", variables=job_variables,
         exclude_actor=False),
    # Files: the episode's owner hears a file is ready (an upload by someone else, or an
    # export's result, which they may have asked for themselves).
    Rule("file_uploaded", "file:ready", episode_owner, when=is_upload, variables=file_variables),
    Rule("file_uploaded", "file:ready", episode_owner, when=is_export, variables=file_variables,
         exclude_actor=False, note="an export job's result"),
)

# The ids a notification's ``data`` carries so a client can link to the subject.
DATA_KEYS = ("episode_id", "job_id", "file_id", "source")


@dataclass(frozen=True)
class Planned:
    """One notification a rule decided on, before rendering and preferences."""

    user_id: int
    type: str
    priority: str
    variables: dict[str, str]
    data: dict


def plan(event: DomainEvent, rules: Iterable[Rule] = RULES) -> list[Planned]:
    """The notifications ``event`` causes: at most one per user, first matching rule wins."""
    facts = Facts(event)
    data = {"event": event.name,
            **{k: facts.payload[k] for k in DATA_KEYS if facts.payload.get(k) is not None}}
    planned: dict[int, Planned] = {}
    notes: list[decisions.Note] = []
    for index, rule in enumerate(rules):
        if rule.event != event.name:
            continue
        which = {"rule": index, "type": rule.type}
        if not rule.when(facts):
            notes.append(decisions.Note(None, event.id, decisions.RULE_SKIPPED,
                                        f"condition {rule.when.__name__}", which))
            continue
        recipients = []
        for uid in dict.fromkeys(rule.audience(facts)):
            if uid in planned:
                notes.append(decisions.Note(uid, event.id, decisions.RULE_SKIPPED,
                                            "an earlier rule matched", which))
            elif rule.exclude_actor and uid == event.actor_id:
                notes.append(decisions.Note(uid, event.id, decisions.RULE_SKIPPED,
                                            "the actor", which))
            else:
                recipients.append(uid)
        if not recipients:
            continue
        variables = rule.variables(facts)
        for uid in recipients:
            planned[uid] = Planned(uid, rule.type, rule.priority, variables, data)
            notes.append(decisions.Note(uid, event.id, decisions.RULE_MATCHED,
                                        f"audience {rule.audience.__name__}", which))
    decisions.note_many(notes)
    return list(planned.values())


# ---- mentions --------------------------------------------------------------------------


def mention_handles(text: str | None) -> set[str]:
    """The lower-cased handles ``@handle`` in ``text`` (see the module docstring)."""
    if not text:
        return set()
    handles = {m.group(1).rstrip(".-").lower() for m in _MENTION.finditer(text)}
    return {h for h in handles if h}


def new_mentions(facts: Facts) -> set[str]:
    """Handles in the description that were not there before this event."""
    if facts.event.name == "episode_created":
        if "description" in facts.payload:
            text = facts.payload["description"]
        else:  # events recorded before the payload carried it
            text = facts.episode.description if facts.episode is not None else None
        return set(sorted(mention_handles(text))[:MAX_MENTIONS])
    change = facts.changes.get("description")
    if not change:
        return set()
    added = mention_handles(change.get("after")) - mention_handles(change.get("before"))
    return set(sorted(added)[:MAX_MENTIONS])


def users_mentioned(handles: set[str]) -> set[int]:
    """Active users whose compact name or email local part is one of ``handles``."""
    if not handles:
        return set()
    compact_name = func.lower(func.replace(User.name, " ", ""))
    by_email = [func.lower(User.email).like(f"{_escape_like(h)}@%", escape="\\") for h in handles]
    query = select(User.id).where(User.is_active.is_(True),
                                  or_(compact_name.in_(sorted(handles)), *by_email))
    return set(db.session.scalars(query))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
