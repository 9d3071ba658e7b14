"""Auth: register, login, refresh, logout, me."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_smorest import Blueprint

from app import limits
from app.api.schemas import RATE_LIMITED, LoginSchema, LogoutSchema, RegisterSchema, SetupSchema
from app.serializers import user_dict
from app.services import sessions
from app.services import users as user_service

blp = Blueprint("auth", __name__, description=(
    "Authentication. A login starts a session: refresh tokens rotate (each works once; "
    "``POST /auth/refresh`` returns the next one with the access token) and a reused one "
    "revokes the session. Sockets end with the session: logout, a reused refresh token, an "
    "expired access token, a role change or a deactivation sends ``session_ended "
    "{\"reason\": \"logout\" | \"session_revoked\" | \"token_expired\" | \"role_changed\" | "
    "\"deactivated\"}`` to each affected socket, then disconnects it. A socket extends its life "
    "with ``reauth {\"token\": <fresh access token>}`` (ack ``{\"ok\", \"expires_at\"}``). "
    "Reconnecting with ``auth.last_event_id`` replays the missed events; a client further "
    "behind than the retained history gets only ``resync_required {\"last_event_id\", "
    "\"reason\": \"history_purged\" | \"too_many_events\" | \"unavailable\"}``: reload over "
    "REST, then carry on from that id. ``join {episode_id, last_event_id?}`` and ``subscribe "
    "{job_id | episode_id, last_event_id?}`` first send that room's events after the id "
    "(those delivered between the reconnect and the rejoin), then acknowledge. Presence and "
    "viewer events are not replayed (the join ack carries the viewers)."))


@blp.route("/auth/register", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@blp.doc(security=[])
@blp.arguments(RegisterSchema)
@limits.limiter.limit(limits.register_per_ip, key_func=limits.ip_key)
def register(data):
    """Create an account with the viewer role (public); 429 past the per-address limit.

    On the embedded default's first run (no account yet) the first account becomes admin
    (see GET /auth/setup)."""
    user = user_service.register(email=data["email"], password=data["password"], name=data["name"],
                                 first_becomes_admin=current_app.config["FIRST_USER_BECOMES_ADMIN"])
    return jsonify({"user": user_dict(user)}), 201


@blp.route("/auth/setup")
@blp.doc(security=[])
@blp.response(200, SetupSchema)
def setup():
    """First-run state (public): whether the next account registered becomes admin.

    True only on the embedded default (no DATABASE_URL, development config) while the
    instance has no account, so a newcomer can reach an admin account without the CLI.
    """
    enabled = current_app.config["FIRST_USER_BECOMES_ADMIN"]
    return {"first_user_becomes_admin": user_service.first_user_becomes_admin(enabled)}


@blp.route("/auth/login", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@blp.doc(security=[])
@blp.arguments(LoginSchema)
@limits.limiter.limit(limits.login_per_ip, key_func=limits.ip_key)
@limits.limiter.limit(limits.login_per_account, key_func=limits.account_key,
               deduct_when=limits.failed_login)
def login(data):
    """Exchange credentials for an access and a refresh token (public).

    429 past the per-address limit, or past the failed attempts allowed per account.
    Both tokens belong to one session (their ``fam`` claim): logout ends all of it.
    """
    user = user_service.authenticate(email=data["email"], password=data["password"])
    return jsonify({**sessions.login(user), "user": user_dict(user)})


@blp.route("/auth/refresh", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@jwt_required(refresh=True)
@limits.limiter.limit(limits.refresh_per_user, key_func=limits.user_key)
def refresh():
    """A new access token and a new refresh token; 429 past the per-user limit.

    Refresh tokens rotate: each one works once, and the response carries the next one
    (``refresh_token``). Presenting a refresh token that was already used revokes the whole
    session (401 ``token_reused``): all its refresh tokens stop working and its sockets are
    disconnected; a revoked session answers 401 ``token_revoked``.
    """
    return jsonify(sessions.rotate(current_user, get_jwt()))


@blp.route("/auth/logout", methods=["POST"])
@jwt_required(verify_type=False)
@blp.arguments(LogoutSchema)
def logout(data):
    """Revoke the token used, the refresh tokens of its session (and the refresh token sent
    in the body), and disconnect the sockets opened with that session, on every server.

    Those sockets receive ``session_ended {"reason": "logout"}`` before the disconnect.
    """
    sessions.logout(get_jwt(), data.get("refresh_token"))
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
