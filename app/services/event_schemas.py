"""The payload of every event ``events.record`` appends: its keys and their types.

Clients, the activity log and notification rules all read these payloads, so a renamed or
missing key is a contract break that no single test of a feature sees. The schema check
(tests/test_event_schemas.py, after Zulip's ``verify_action``) walks every ``record`` call
site in ``app/`` and validates every payload a flow of API calls stores against this table.

Adding an event is one line in ``SCHEMAS``: ``"name": {"key": type, "optional?": type}``.
A type is a Python type or a tuple of them (``None`` allows null); a key ending in ``?`` may
be absent; ``...: object`` as a key lets the payload carry further keys (caller details).
"""
from __future__ import annotations

from typing import Any

# A null where the value may be missing (an episode without description, no deliver_at).
OPT_STR = (str, None)
NUMBER = (int, float)

# Every job event carries these (app/jobs/service.py ``_spec``).
JOB = {"job_id": int, "episode_id": int, "type": str, "created_by": (int, None)}
# Every file event carries these plus the acting user's id under a verb (``_file_payload``).
FILE = {"file_id": int, "episode_id": int, "file_name": str, "size": int}
PUSH = {"_rooms": list, "data": dict, "_actor": (dict, None), "_timestamp?": str}
EPISODE = {"episode_id": int, "title": str, "created_by": (int, None)}

SCHEMAS: dict[str, dict[Any, Any]] = {
    "episode_created": {**EPISODE, "categories": list, "status": str, "description": OPT_STR},
    "episode_updated": {**EPISODE, "changed_fields": list, "status": str, "updated_by": int,
                        "episode": dict},
    "episode_published": {**EPISODE, "published_by": int},
    "episode_deleted": {**EPISODE, "deleted_by": int},
    "file_uploaded": {**FILE, "uploaded_by": (int, None), "source?": str, "job_id?": int},
    "file_download": {**FILE, "downloaded_by": (int, None)},
    "file_deleted": {**FILE, "deleted_by": (int, None)},
    "job_created": JOB,
    "job_started": {**JOB, "retry_count": int},
    "job_progress": {**JOB, "progress": int, "message": str},
    "job_completed": {**JOB, "results": dict},
    "job_retry": {**JOB, "retry_count": int, "delay": NUMBER, "error": str, "recovered?": bool},
    "job_retried": {**JOB, "retry_count": int},
    "job_failed": {**JOB, "error": str, "retries_exhausted": bool, "retry_count": int,
                   "recovered?": bool},
    "job_cancelled": {**JOB, "recovered?": bool},
    "job_processor_started": {"hostname": str, "concurrency": int, "max_concurrent": int},
    "notification_sent": {"user_ids?": list, "role?": str, "all?": bool, "type": str,
                          "title": str, "message": OPT_STR, "data": dict, "priority": str,
                          "deliver_at": OPT_STR, "expires_at": OPT_STR, "recipients": int},
    "admin_alert": {"message": str, ...: object},
    # Accounts (app/services/users.py ``_record``): the change itself is in ``changes``.
    "user_registered": {"user_id": int, "role": str},
    "user_role_changed": {"user_id": int},
    "user_deactivated": {"user_id": int},
    "user_reactivated": {"user_id": int},
    # Real-time only, one user's /feed room (notifications ``push.user_event``): the envelope
    # is prepared at record time so neither the emit nor a replay reads a row.
    # A dispatch claim's pushes are one event (``push.batch_events``): each user in
    # ``_batch.users`` gets its own envelope built from ``base`` and its own part.
    "notification": {"_batch": dict},
    "notification_read": PUSH,
}

# Events whose name the caller chooses (``POST /realtime/broadcast``), by resource type.
BY_RESOURCE_TYPE: dict[str, dict[Any, Any]] = {
    "broadcast": {"_rooms": list, "data": dict},
}


def schema_for(name: str, resource_type: str | None = None) -> dict[Any, Any] | None:
    """The schema of an event, or None when the event is unknown."""
    if name in SCHEMAS:
        return SCHEMAS[name]
    return BY_RESOURCE_TYPE.get(resource_type or "")


def keys_of(schema: dict[Any, Any]) -> tuple[set[str], set[str], bool]:
    """(required keys, optional keys, whether other keys are allowed)."""
    required = {k for k in schema if isinstance(k, str) and not k.endswith("?")}
    optional = {k[:-1] for k in schema if isinstance(k, str) and k.endswith("?")}
    return required, optional, ... in schema


def _type_ok(value: Any, expected: Any) -> bool:
    for kind in expected if isinstance(expected, tuple) else (expected,):
        if kind is None and value is None:
            return True
        # bool is an int to isinstance; a flag where a count belongs is still a mismatch.
        if kind is int and isinstance(value, bool):
            continue
        if kind is not None and isinstance(value, kind):
            return True
    return False


def problems(name: str, payload: dict, resource_type: str | None = None) -> list[str]:
    """What is wrong with this payload for this event (empty when it matches)."""
    schema = schema_for(name, resource_type)
    if schema is None:
        return [f"{name}: no schema in app/services/event_schemas.py"]
    required, optional, open_ended = keys_of(schema)
    found = []
    missing = required - payload.keys()
    if missing:
        found.append(f"{name}: missing {sorted(missing)}")
    extra = payload.keys() - required - optional
    if extra and not open_ended:
        found.append(f"{name}: unexpected {sorted(extra)}")
    for key, value in payload.items():
        expected = schema.get(key, schema.get(f"{key}?"))
        if expected is not None and not _type_ok(value, expected):
            found.append(f"{name}: {key}={value!r} is not {expected}")
    return found
