"""Presence over REST: my status, anyone's presence, who is online, viewers, stats."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint
from marshmallow import fields, validate

from app.api.schemas import StrictSchema
from app.models.presence import STATUSES
from app.services import activity as activity_service
from app.services import presence as presence_service

blp = Blueprint("presence", __name__, description="Presence")


class StatusSchema(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    message = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))


@blp.route("/presence/me")
@jwt_required()
def my_presence():
    """The caller's presence."""
    return jsonify(presence_service.get_presence(current_user.id, current_user.id))


@blp.route("/presence/me", methods=["PUT"])
@jwt_required()
@blp.arguments(StatusSchema)
def set_my_presence(data):
    """Set status (online, away, busy, do_not_disturb, offline) and message."""
    user_id = current_user.id
    presence_service.set_status(current_user, data["status"], data.get("message"))
    return jsonify(presence_service.get_presence(user_id, user_id))


@blp.route("/presence/users/<int:user_id>")
@jwt_required()
def user_presence(user_id: int):
    """Another user's status, last activity and what they are viewing (an invisible user,
    status offline by choice, looks offline: no message, last activity or viewing)."""
    return jsonify(presence_service.get_presence(user_id, current_user.id))


@blp.route("/presence/online")
@jwt_required()
def online():
    """Everyone shown online (invisible users are not listed)."""
    return jsonify({"items": presence_service.online_users(), "next_cursor": None})


@blp.route("/presence/stats")
@jwt_required()
def stats():
    """Counts by status and connections."""
    return jsonify(presence_service.stats())


@blp.route("/presence/<resource_type>/<int:resource_id>/viewers")
@jwt_required()
def viewers(resource_type: str, resource_id: int):
    """Who is viewing a resource now: the first 200 visible viewers by user id."""
    activity_service.check_resource_visible(current_user, resource_type, resource_id)
    return jsonify({"items": presence_service.viewers_of(resource_type, resource_id)})
