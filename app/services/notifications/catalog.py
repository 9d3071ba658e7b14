"""The notification types: ONE table saying, per type, its templates, priority, TTL, channels.

Adding a type is one :class:`Kind` line here; everything else (validation of the API, the
rules' templates, expiry of the rows, the default channels) reads this table.
"""
from __future__ import annotations

import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

CHANNELS = ("in_app", "email")
IN_APP = ("in_app",)
IN_APP_AND_EMAIL = ("in_app", "email")  # email by default only for what needs action


@dataclass(frozen=True)
class Kind:
    """One notification type. Template fields are plain names the rule's variables fill
    (tests render every rule's template strictly, so a typo fails there)."""

    title: str
    body: str
    priority: str = "normal"        # what a send without a priority uses
    ttl: timedelta | None = None    # rows expire this long after delivery (None: never)
    channels: tuple[str, ...] = IN_APP  # unless the user chose otherwise


CATALOG: dict[str, Kind] = {
    "job:created": Kind("Job queued: {job_type} #{job_id}",
                        'Your {job_type} job for "{episode_title}" is queued.',
                        "low", timedelta(days=7)),
    "job:progress": Kind("{job_type} #{job_id}: {progress}%",
                         'Your {job_type} job for "{episode_title}" is {progress}% done.',
                         "low", timedelta(days=1)),
    "job:completed": Kind("Job finished: {job_type} #{job_id}",
                          'Your {job_type} job for "{episode_title}" completed.',
                          "normal", timedelta(days=30)),
    "job:failed": Kind("Job failed: {job_type} #{job_id}",
                       'Your {job_type} job for "{episode_title}" failed: {error}',
                       "high", timedelta(days=30), IN_APP_AND_EMAIL),
    "episode:created": Kind("New episode: {episode_title}",
                            '{actor_name} created the episode "{episode_title}".',
                            "normal", timedelta(days=30)),
    "episode:updated": Kind("Episode updated: {episode_title}",
                            '{actor_name} changed {changed_fields} of "{episode_title}".',
                            "low", timedelta(days=14)),
    "episode:deleted": Kind("Episode deleted: {episode_title}",
                            '{actor_name} deleted the episode "{episode_title}".',
                            "normal", timedelta(days=30)),
    "episode:published": Kind("Episode published: {episode_title}",
                              '{actor_name} published "{episode_title}".',
                              "normal", timedelta(days=30)),
    "admin:alert": Kind("System alert", "{message}", "critical", timedelta(days=7),
                        IN_APP_AND_EMAIL),
    "user:mention": Kind("{actor_name} mentioned you",
                         '{actor_name} mentioned you in "{episode_title}".',
                         "normal", timedelta(days=60), IN_APP_AND_EMAIL),
    "file:ready": Kind("File ready: {file_name}", '"{file_name}" is ready on "{episode_title}".',
                       "normal", timedelta(days=14)),
    "approval:needed": Kind("Approval needed: {episode_title}",
                            '{actor_name} asks to publish "{episode_title}".',
                            "high", timedelta(days=30), IN_APP_AND_EMAIL),
}

TYPES: tuple[str, ...] = tuple(CATALOG)
# Read-only views by type, for callers that want one column of the table.
TEMPLATES = MappingProxyType({t: (k.title, k.body) for t, k in CATALOG.items()})
DEFAULT_EXPIRY = MappingProxyType({t: k.ttl for t, k in CATALOG.items()})
DEFAULT_CHANNELS = MappingProxyType({t: k.channels for t, k in CATALOG.items()})


def expiry_for(notification_type: str, start: datetime) -> datetime | None:
    """When a row of this type delivered at ``start`` expires (None: the type never does)."""
    kind = CATALOG.get(notification_type)
    return start + kind.ttl if kind is not None and kind.ttl is not None else None


class TemplateError(ValueError):
    """A template names a variable the caller did not supply, or uses more than a name."""


class _Formatter(string.Formatter):
    """``str.format`` limited to plain names: no ``{x.attr}`` / ``{x[0]}`` reaching objects."""

    def __init__(self, *, strict: bool):
        super().__init__()
        self.strict = strict

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]):
        if not field_name.isidentifier():
            raise TemplateError(f"template field {field_name!r} is not a plain name")
        if field_name not in kwargs:
            if self.strict:
                raise TemplateError(f"missing template variable {field_name!r}")
            log.error("notification template variable %r missing", field_name)
            return "…", field_name
        return kwargs[field_name], field_name


def template_fields(notification_type: str) -> set[str]:
    """The variable names a type's title and message use."""
    kind = CATALOG[notification_type]
    names: set[str] = set()
    for text in (kind.title, kind.body):
        names.update(name for _, name, _, _ in string.Formatter().parse(text) if name)
    return names


def render(notification_type: str, variables: Mapping[str, Any], *,
           strict: bool = False) -> tuple[str, str]:
    """(title, message) of a type; ``strict`` raises on a missing variable (tests use it).

    At delivery a missing variable renders as "…" and is logged, never crashing the step:
    the tests guarantee every rule supplies what its template needs.
    """
    kind = CATALOG[notification_type]
    formatter = _Formatter(strict=strict)
    values = {k: str(v) for k, v in variables.items()}
    return formatter.vformat(kind.title, (), values)[:255], formatter.vformat(kind.body, (), values)
