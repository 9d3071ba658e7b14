"""Event pipeline statistics for the admin dashboard (admin)."""
from __future__ import annotations

from flask import jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.api.schemas import StrictSchema
from app.auth import role_required
from app.extensions import ErrorEnvelopeSchema
from app.services import timeline
from app.services.event_stats import pipeline_stats

blp = Blueprint("events", __name__, description="Event pipeline statistics")


class EventStatsQuerySchema(StrictSchema):
    minutes = fields.Integer(load_default=60, validate=validate.Range(1, 1440))


class MinuteSchema(Schema):
    minute = fields.String(metadata={"description": "Start of the minute, UTC"})
    events = fields.Integer(metadata={"description": "Events recorded in the outbox"})
    delivered = fields.Integer(metadata={"description": "Of those, delivered so far"})
    lag_avg_ms = fields.Float(allow_none=True, metadata={"description": "Commit to delivered, average"})
    lag_max_ms = fields.Float(allow_none=True, metadata={"description": "Commit to delivered, worst"})


class EventStatsSchema(Schema):
    minutes = fields.Integer()
    per_minute = fields.List(fields.Nested(MinuteSchema))
    undelivered = fields.Integer(metadata={"description": "Events waiting in the outbox now"})


@blp.route("/events/stats")
@role_required("admin")
@blp.arguments(EventStatsQuerySchema, location="query")
@blp.response(200, EventStatsSchema)
def event_stats(args):
    """Events per minute and delivery lag over the last ``minutes`` (admin dashboard)."""
    return jsonify(pipeline_stats(minutes=args["minutes"]))


# ---- the delivery timeline (issue 16) --------------------------------------------------------


class TimelineStepSchema(Schema):
    step = fields.String(metadata={"description": "recorded, claimed, emitted, delivered, failed"})
    at = fields.String()
    detail = fields.Dict(metadata={"description": "attempt, batch_size, rooms, error, "
                                                  "next_attempt_at, request_id..."})


class DecisionSchema(Schema):
    decision = fields.String(metadata={"description": "created, skipped, pushed, held, digest, "
                                                      "emailed, email_failed"})
    reason = fields.String(metadata={"description": "Which rule or setting decided, and why"})
    at = fields.String()
    user_id = fields.Integer(allow_none=True)
    event_id = fields.Integer(allow_none=True)
    notification_id = fields.Integer(allow_none=True)
    detail = fields.Dict()


class TimelineEventSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    actor_id = fields.Integer(allow_none=True)
    resource_type = fields.String()
    resource_id = fields.Integer(allow_none=True)
    request_id = fields.String(allow_none=True, metadata={"description": "X-Request-ID of the "
                                                                         "request that recorded it"})
    created_at = fields.String()
    delivered_at = fields.String(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.String(allow_none=True)


class EventTimelineSchema(Schema):
    event = fields.Nested(TimelineEventSchema)
    steps = fields.List(fields.Nested(TimelineStepSchema))
    decisions = fields.List(fields.Nested(DecisionSchema))


class UserEventTimelineSchema(Schema):
    event = fields.Nested(TimelineEventSchema)
    user_id = fields.Integer()
    notification_ids = fields.List(fields.Integer())
    decisions = fields.List(fields.Nested(DecisionSchema))


class TimelineNotificationSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    event_id = fields.Integer(allow_none=True)
    type = fields.String()
    created_at = fields.String()
    delivered_at = fields.String(allow_none=True)


class NotificationTimelineSchema(Schema):
    notification = fields.Nested(TimelineNotificationSchema)
    decisions = fields.List(fields.Nested(DecisionSchema))


def _errors_doc(fn):
    fn = blp.alt_response(404, schema=ErrorEnvelopeSchema, description="Not found (or purged "
                          "after the outbox retention period)")(fn)
    return blp.alt_response(403, schema=ErrorEnvelopeSchema, description="Not an admin")(fn)


@blp.route("/events/<int:event_id>/timeline")
@role_required("admin")
@blp.response(200, EventTimelineSchema)
@_errors_doc
def event_timeline(event_id: int):
    """An event's delivery path: recorded, claimed, emitted to which rooms, delivered,
    failed attempts with their errors, and the notification decisions it caused (admin)."""
    return jsonify(timeline.event_timeline(event_id))


@blp.route("/events/<int:event_id>/timeline/users/<int:user_id>")
@role_required("admin")
@blp.response(200, UserEventTimelineSchema)
@_errors_doc
def user_event_timeline(event_id: int, user_id: int):
    """Every notification decision about one user for one event, also when it produced
    no notification ("why didn't I get this?"; admin)."""
    return jsonify(timeline.user_event_timeline(event_id, user_id))


@blp.route("/notifications/<int:notification_id>/timeline")
@role_required("admin")
@blp.response(200, NotificationTimelineSchema)
@_errors_doc
def notification_timeline(notification_id: int):
    """Every decision behind one notification: rule, preferences, quiet hours, rate limit,
    digest, channels, push and email (admin)."""
    return jsonify(timeline.notification_timeline(notification_id))
