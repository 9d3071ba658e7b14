"""Auth: register, login, refresh, logout, me."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    current_user,
    get_jwt,
    jwt_required,
)
from flask_smorest import Blueprint

from app.api.schemas import LoginSchema, LogoutSchema, RegisterSchema, SetupSchema
from app.auth import revoke_current_token, revoke_encoded_token
from app.services import users as user_service
from app.services.serializers import user_dict

blp = Blueprint("auth", __name__, description="Authentication")


@blp.route("/auth/register", methods=["POST"])
@blp.arguments(RegisterSchema)
def register(data):
    """Create an account with the viewer role (public); on the embedded default's first
    run (no account yet) the first account becomes admin (see GET /auth/setup)."""
    user = user_service.register(email=data["email"], password=data["password"], name=data["name"],
                                 first_becomes_admin=current_app.config["FIRST_USER_BECOMES_ADMIN"])
    return jsonify({"user": user_dict(user)}), 201


@blp.route("/auth/setup")
@blp.response(200, SetupSchema)
def setup():
    """First-run state (public): whether the next account registered becomes admin.

    True only on the embedded default (no DATABASE_URL, development config) while the
    instance has no account, so a newcomer can reach an admin account without the CLI.
    """
    enabled = current_app.config["FIRST_USER_BECOMES_ADMIN"]
    return {"first_user_becomes_admin": user_service.first_user_becomes_admin(enabled)}


@blp.route("/auth/login", methods=["POST"])
@blp.arguments(LoginSchema)
def login(data):
    """Exchange credentials for an access and a refresh token (public)."""
    user = user_service.authenticate(email=data["email"], password=data["password"])
    return jsonify({
        "access_token": create_access_token(identity=user, fresh=True),
        "refresh_token": create_refresh_token(identity=user),
        "user": user_dict(user),
    })


@blp.route("/auth/refresh", methods=["POST"])
@jwt_required(refresh=True)
def refresh():
    """A new access token for a valid refresh token."""
    return jsonify({"access_token": create_access_token(identity=current_user)})


@blp.route("/auth/logout", methods=["POST"])
@jwt_required(verify_type=False)
@blp.arguments(LogoutSchema)
def logout(data):
    """Revoke the token used (and the refresh token, when sent)."""
    revoke_current_token()
    if data.get("refresh_token") and get_jwt().get("type") == "access":
        revoke_encoded_token(data["refresh_token"])
    return "", 204


@blp.route("/auth/me")
@jwt_required()
def me():
    """The caller."""
    return jsonify(user_dict(current_user))
