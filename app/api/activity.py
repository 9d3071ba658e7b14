"""Activity: my feed, team feed, resource history and timeline, search, stats, dashboard."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint
from marshmallow import fields, validate
from sqlalchemy import select

from app.api.schemas import ListQuerySchema, StrictSchema
from app.auth import role_required
from app.models import ActivityLog
from app.pagination import paginate
from app.serializers import activity_dict
from app.services import activity as activity_service

blp = Blueprint("activity", __name__, description="Activity log")


class FeedQuerySchema(ListQuerySchema):
    user_id = fields.Integer()
    action = fields.String(validate=validate.OneOf(activity_service.ACTIONS))
    resource_type = fields.String(validate=validate.Length(max=32))
    since = fields.AwareDateTime(default_timezone=None)
    until = fields.AwareDateTime(default_timezone=None)


class SearchQuerySchema(ListQuerySchema):
    q = fields.String(required=True, validate=validate.Length(min=1, max=200))


class StatsQuerySchema(StrictSchema):
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()


class DashboardQuerySchema(StrictSchema):
    days = fields.Integer(load_default=7, validate=validate.Range(1, 365))


def _page(query, args, *, ascending: bool = False) -> dict:
    page = paginate(query, ActivityLog.id, lambda row: row, cursor=args.get("cursor"),
                    limit=args.get("limit"), ascending=ascending)
    users = activity_service.users_by_id(row.user_id for row in page["items"])
    page["items"] = [activity_dict(row, users, show_client=current_user.is_admin)
                     for row in page["items"]]
    return page


def _filters(args) -> dict:
    return {key: args.get(key) for key in ("user_id", "action", "resource_type", "since", "until")}


@blp.route("/activity/me")
@jwt_required()
@blp.arguments(FeedQuerySchema, location="query")
def my_feed(args):
    """The caller's own actions, newest first."""
    filters = _filters(args) | {"user_id": current_user.id}
    return jsonify(_page(activity_service.filtered(select(ActivityLog), **filters), args))


@blp.route("/activity")
@role_required("admin")
@blp.arguments(FeedQuerySchema, location="query")
def team_feed(args):
    """Everyone's actions (admin), with filters."""
    return jsonify(_page(activity_service.filtered(select(ActivityLog), **_filters(args)), args))


@blp.route("/activity/search")
@jwt_required()
@blp.arguments(SearchQuerySchema, location="query")
def search(args):
    """Full-text search over actions, resources and metadata (admins: all; others: own)."""
    query = select(ActivityLog).where(activity_service.search_condition(args["q"]))
    if not current_user.is_admin:
        query = query.where(ActivityLog.user_id == current_user.id)
    return jsonify(_page(query, args))


@blp.route("/activity/stats")
@jwt_required()
@blp.arguments(StatsQuerySchema, location="query")
def stats(args):
    """Counts by action, resource type, user and day (admins: all; others: own)."""
    user_id = None if current_user.is_admin else current_user.id
    return jsonify(activity_service.stats(since=args.get("since"), until=args.get("until"),
                                          user_id=user_id))


@blp.route("/activity/dashboard")
@jwt_required()
@blp.arguments(DashboardQuerySchema, location="query")
def dashboard(args):
    """The last N days at a glance (admins: all; others: own)."""
    user_id = None if current_user.is_admin else current_user.id
    return jsonify(activity_service.dashboard(days=args["days"], user_id=user_id,
                                              show_client=current_user.is_admin))


@blp.route("/activity/<resource_type>/<int:resource_id>")
@jwt_required()
@blp.arguments(ListQuerySchema, location="query")
def history(args, resource_type: str, resource_id: int):
    """A resource's history, newest first."""
    activity_service.check_resource_visible(current_user, resource_type, resource_id)
    query = activity_service.filtered(select(ActivityLog), resource_type=resource_type,
                                      resource_id=resource_id)
    return jsonify(_page(query, args))


@blp.route("/activity/<resource_type>/<int:resource_id>/timeline")
@jwt_required()
@blp.arguments(ListQuerySchema, location="query")
def timeline(args, resource_type: str, resource_id: int):
    """A resource's history, oldest first, with before/after changes."""
    activity_service.check_resource_visible(current_user, resource_type, resource_id)
    query = activity_service.filtered(select(ActivityLog), resource_type=resource_type,
                                      resource_id=resource_id)
    return jsonify(_page(query, args, ascending=True))
