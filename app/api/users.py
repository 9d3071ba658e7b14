"""Users (admin): list, change role, deactivate."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from app.api.schemas import ListQuerySchema, UserUpdateSchema
from app.auth import role_required
from app.serializers import user_dict
from app.services import users as user_service

blp = Blueprint("users", __name__, description="Users (admin)")


@blp.route("/users")
@role_required("admin")
@blp.arguments(ListQuerySchema, location="query")
def list_users(args):
    """Every user, newest first."""
    page = user_service.list_users(cursor=args["cursor"], limit=args["limit"])
    return jsonify({**page, "items": [user_dict(user) for user in page["items"]]})


@blp.route("/users/<int:user_id>", methods=["PATCH"])
@role_required("admin")
@blp.arguments(UserUpdateSchema)
def update_user(data, user_id: int):
    """Change a user's role and/or deactivate (``{"is_active": false}``) or reactivate them.

    Either change disconnects the user's live sockets on every server within seconds
    (``session_ended`` with reason ``role_changed`` or ``deactivated`` first); a
    deactivated user's refresh tokens are revoked and their access tokens refused. The last
    active admin can be neither demoted nor deactivated (409).
    """
    return jsonify(user_dict(user_service.update_user(user_id, role=data.get("role"),
                                                      is_active=data.get("is_active"),
                                                      actor=current_user)))
