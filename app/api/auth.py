"""Auth: register, login, refresh, logout, me."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    current_user,
    get_jwt,
    jwt_required,
)
from flask_smorest import Blueprint

from app import limits
from app.api.schemas import RATE_LIMITED, LoginSchema, LogoutSchema, RegisterSchema
from app.auth import revoke_current_token, revoke_encoded_token
from app.extensions import limiter
from app.services import users as user_service
from app.services.serializers import user_dict

blp = Blueprint("auth", __name__, description="Authentication")


@blp.route("/auth/register", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@blp.doc(security=[])
@blp.arguments(RegisterSchema)
@limiter.limit(limits.register_per_ip, key_func=limits.ip_key)
def register(data):
    """Create an account with the viewer role (public); 429 past the per-address limit."""
    user = user_service.register(email=data["email"], password=data["password"], name=data["name"])
    return jsonify({"user": user_dict(user)}), 201


@blp.route("/auth/login", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@blp.doc(security=[])
@blp.arguments(LoginSchema)
@limiter.limit(limits.login_per_ip, key_func=limits.ip_key)
@limiter.limit(limits.login_per_account, key_func=limits.account_key,
               deduct_when=limits.failed_login)
def login(data):
    """Exchange credentials for an access and a refresh token (public).

    429 past the per-address limit, or past the failed attempts allowed per account.
    """
    user = user_service.authenticate(email=data["email"], password=data["password"])
    return jsonify({
        "access_token": create_access_token(identity=user, fresh=True),
        "refresh_token": create_refresh_token(identity=user),
        "user": user_dict(user),
    })


@blp.route("/auth/refresh", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@jwt_required(refresh=True)
@limiter.limit(limits.refresh_per_user, key_func=limits.user_key)
def refresh():
    """A new access token for a valid refresh token; 429 past the per-user limit."""
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


@blp.after_request
def _never_cache(response):
    """Auth responses carry tokens and credentials' outcomes: no cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
