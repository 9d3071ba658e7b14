"""Notifications: the caller's inbox, preferences, and admin sends.

Every read and write is scoped to the caller's own rows: another user's notification is a
404, exactly like one that does not exist.
"""
from __future__ import annotations

import json
import re
from datetime import UTC

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint
from marshmallow import ValidationError, fields, validate, validates_schema

from app.api.schemas import ListQuerySchema, StrictSchema
from app.auth import role_required
from app.models import Notification, NotificationPreference, isoformat
from app.models.core import ROLES
from app.models.notifications import PRIORITIES
from app.pagination import paginate
from app.services import notifications as service

# A notification as the REST API returns it is exactly the ``notification`` push's data
# (the contract: "a new notification, as GET /notifications/<id> returns it").
notification_dict = service.notification_payload


def preferences_dict(row: NotificationPreference | None) -> dict:
    """The caller's preferences with defaults filled in (every type's channels)."""
    prefs = service.Prefs.from_row(row)
    quiet = None
    if row is not None and row.quiet_hours_start and row.quiet_hours_end:
        quiet = {"start": row.quiet_hours_start, "end": row.quiet_hours_end}
    return {
        "muted_types": sorted(prefs.muted_types),
        "channels": {t: list(prefs.channels_for(t)) for t in service.TYPES},
        "quiet_hours": quiet,
        "timezone": prefs.timezone,
        "digest_frequency": prefs.digest_frequency,
        "last_digest_at": isoformat(row.last_digest_at) if row is not None else None,
    }

blp = Blueprint("notifications", __name__, description="Notifications")

def _within_years(value) -> None:
    """Scheduling is for this decade: far dates cannot be stored or delivered."""
    from datetime import datetime, timedelta

    now = datetime.now(UTC)
    if not now - timedelta(days=3650) <= value <= now + timedelta(days=3650):
        raise ValidationError("Must be within ten years of now.")


HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d\Z")
MAX_DATA_BYTES = 10_000


class NotificationListQuerySchema(ListQuerySchema):
    unread = fields.Boolean(load_default=False)
    type = fields.String(validate=validate.OneOf(service.TYPES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))


class QuietHoursSchema(StrictSchema):
    start = fields.String(required=True, validate=validate.Regexp(HHMM, error="Use HH:MM."))
    end = fields.String(required=True, validate=validate.Regexp(HHMM, error="Use HH:MM."))

    @validates_schema
    def _not_empty(self, data, **_kwargs):
        if data.get("start") and data["start"] == data.get("end"):
            raise ValidationError("Start and end must differ.", field_name="end")


def _check_timezone(value: str) -> None:
    if not service.valid_timezone(value):
        raise ValidationError("Unknown time zone.")


class PreferencesSchema(StrictSchema):
    muted_types = fields.List(fields.String(validate=validate.OneOf(service.TYPES)),
                              validate=validate.Length(max=len(service.TYPES)))
    channels = fields.Dict(
        keys=fields.String(validate=validate.OneOf(service.TYPES)),
        values=fields.List(fields.String(validate=validate.OneOf(service.CHANNELS)),
                           validate=validate.Length(max=len(service.CHANNELS))))
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True)
    timezone = fields.String(validate=[validate.Length(min=1, max=64), _check_timezone])
    digest_frequency = fields.String(validate=validate.OneOf(tuple(service.DIGEST_PERIODS)))


def _check_data_size(value: dict) -> None:
    if len(json.dumps(value, default=str)) > MAX_DATA_BYTES:
        raise ValidationError(f"At most {MAX_DATA_BYTES} bytes of JSON.")


class SendSchema(StrictSchema):
    user_ids = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=service.MAX_ID)),
                           validate=validate.Length(min=1, max=10_000))
    role = fields.String(validate=validate.OneOf(ROLES))
    all_users = fields.Boolean(data_key="all", load_default=False)
    type = fields.String(load_default="admin:alert", validate=validate.OneOf(service.TYPES))
    title = fields.String(required=True, validate=validate.Length(min=1, max=255))
    message = fields.String(load_default="", validate=validate.Length(max=5000))
    data = fields.Dict(load_default=dict, validate=_check_data_size)
    priority = fields.String(load_default="normal", validate=validate.OneOf(PRIORITIES))
    deliver_at = fields.AwareDateTime(default_timezone=UTC, load_default=None, allow_none=True,
                                      validate=_within_years)
    expires_at = fields.AwareDateTime(default_timezone=UTC, load_default=None, allow_none=True,
                                      validate=_within_years)

    @validates_schema
    def _one_target(self, data, **_kwargs):
        given = [k for k in ("user_ids", "role") if data.get(k)] + (["all"] if data.get("all_users") else [])
        if len(given) != 1:
            message = "Give exactly one of user_ids, role, all."
            raise ValidationError({"user_ids": [message], "role": [message], "all": [message]})


@blp.route("/notifications")
@jwt_required()
@blp.arguments(NotificationListQuerySchema, location="query")
def list_notifications(args):
    """The caller's notifications, newest first; ?unread=true&type=&priority=."""
    query = service.inbox_query(current_user, unread=args["unread"], type=args.get("type"),
                                priority=args.get("priority"))
    return jsonify(paginate(query, Notification.id, notification_dict,
                            cursor=args["cursor"], limit=args["limit"]))


@blp.route("/notifications/unread-count")
@jwt_required()
def unread_count():
    """The badge: ``{"count", "capped"}``; exact up to NOTIFICATION_UNREAD_COUNT_CAP."""
    return jsonify(service.unread_badge(current_user.id))


@blp.route("/notifications/stats")
@jwt_required()
def stats():
    """The caller's notifications counted by type, priority and read state."""
    return jsonify(service.stats(current_user))


@blp.route("/notifications/preferences")
@jwt_required()
def get_preferences():
    """Muted types, channels per type, quiet hours, time zone, digest frequency."""
    return jsonify(preferences_dict(service.get_preferences(current_user)))


@blp.route("/notifications/preferences", methods=["PUT"])
@jwt_required()
@blp.arguments(PreferencesSchema)
def put_preferences(data):
    """Change the preferences given; fields left out keep their value."""
    return jsonify(preferences_dict(service.update_preferences(current_user, data)))


@blp.route("/notifications/read-all", methods=["POST"])
@jwt_required()
def read_all():
    """Mark every unread notification read (one statement); tabs hear notification_read."""
    return jsonify(service.mark_all_read(current_user))


@blp.route("/notifications/<int:notification_id>")
@jwt_required()
def get_notification(notification_id: int):
    """One of the caller's notifications (404 for anyone else's)."""
    return jsonify(notification_dict(service.get_notification(current_user, notification_id)))


@blp.route("/notifications/<int:notification_id>", methods=["DELETE"])
@jwt_required()
def delete_notification(notification_id: int):
    """Delete one of the caller's notifications."""
    service.delete_notification(current_user, notification_id)
    return "", 204


@blp.route("/notifications/<int:notification_id>/read", methods=["POST"])
@jwt_required()
def mark_read(notification_id: int):
    """Mark one notification read; tabs hear notification_read with the new count."""
    return jsonify(notification_dict(service.mark_read(current_user, notification_id)))


@blp.route("/notifications", methods=["POST"])
@role_required("admin")
@blp.arguments(SendSchema)
def send(data):
    """Send a notification to user ids, a role or everyone (admin); fan-out in a worker."""
    result = service.send(current_user, **data)
    return jsonify(result), 202
