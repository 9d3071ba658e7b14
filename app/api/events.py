"""Event pipeline statistics for the admin dashboard (admin)."""
from __future__ import annotations

from flask import jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.api.schemas import StrictSchema
from app.auth import role_required
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
