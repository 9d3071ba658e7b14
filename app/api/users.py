"""Users (admin): list and change role."""
from __future__ import annotations

from flask import jsonify
from flask_smorest import Blueprint

from app.api.schemas import ListQuerySchema, RoleSchema
from app.auth import role_required
from app.extensions import db
from app.models import User
from app.pagination import paginate
from app.services import users as user_service
from app.services.serializers import user_dict

blp = Blueprint("users", __name__, description="Users (admin)")


@blp.route("/users")
@role_required("admin")
@blp.arguments(ListQuerySchema, location="query")
def list_users(args):
    """Every user, newest first."""
    return jsonify(paginate(db.select(User), User.id, user_dict,
                            cursor=args["cursor"], limit=args["limit"]))


@blp.route("/users/<int:user_id>", methods=["PATCH"])
@role_required("admin")
@blp.arguments(RoleSchema)
def change_role(data, user_id: int):
    """Change a user's role."""
    return jsonify(user_dict(user_service.set_role(user_id, data["role"])))
