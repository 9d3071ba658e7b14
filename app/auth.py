"""JWT wiring: user loading, the token blocklist, role checks, JSON errors for auth."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps

from flask import Flask
from flask_jwt_extended import current_user, decode_token, get_jwt, verify_jwt_in_request

from app.errors import Forbidden, error_response
from app.extensions import db, jwt
from app.models import RevokedToken, User, utcnow
from app.redis_client import get_redis

ROLE_RANK = {"viewer": 0, "editor": 1, "admin": 2}


def revoke_token(jti: str, expires_at: datetime) -> None:
    """Put a token on the blocklist until it would have expired anyway."""
    client = get_redis()
    if client is not None:
        ttl = max(1, int((expires_at - utcnow()).total_seconds()) + 1)
        client.set(f"ec:blocklist:{jti}", "1", ex=ttl)
        return
    if db.session.scalar(db.select(RevokedToken.id).filter_by(jti=jti)) is None:
        db.session.add(RevokedToken(jti=jti, expires_at=expires_at))
        db.session.commit()


def is_token_revoked(jti: str) -> bool:
    client = get_redis()
    if client is not None:
        return client.exists(f"ec:blocklist:{jti}") > 0
    return db.session.scalar(db.select(RevokedToken.id).filter_by(jti=jti)) is not None


def revoke_current_token() -> None:
    claims = get_jwt()
    revoke_token(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))


def revoke_encoded_token(encoded: str) -> bool:
    """Revoke a token given as a string (the refresh token sent on logout)."""
    try:
        claims = decode_token(encoded, allow_expired=True)
    except Exception:  # noqa: BLE001 - any undecodable token is simply not revoked
        return False
    revoke_token(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))
    return True


def load_user_from_token(encoded: str) -> User | None:
    """Decode an access token outside a request (Socket.IO connect); None if not valid."""
    try:
        claims = decode_token(encoded)
    except Exception:  # noqa: BLE001 - expired, bad signature, malformed: all refused
        return None
    if claims.get("type") != "access" or is_token_revoked(claims["jti"]):
        return None
    user = db.session.get(User, int(claims["sub"]))
    if user is None or not user.is_active:
        return None
    return user


def role_required(minimum: str) -> Callable:
    """Require a valid access token and at least the given role (viewer < editor < admin)."""

    def decorator(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args, **kwargs):
            verify_jwt_in_request()
            if ROLE_RANK[current_user.role] < ROLE_RANK[minimum]:
                raise Forbidden(f"This action needs the {minimum} role")
            return fn(*args, **kwargs)

        return wrapper

    return decorator


def init_auth(app: Flask) -> None:
    """Bind JWT callbacks so every auth failure is a JSON error in the one shape."""

    @jwt.user_identity_loader
    def _identity(user: User | int) -> str:
        return str(user.id if isinstance(user, User) else user)

    @jwt.user_lookup_loader
    def _lookup(_header, claims) -> User | None:
        user = db.session.get(User, int(claims["sub"]))
        return user if user is not None and user.is_active else None

    @jwt.token_in_blocklist_loader
    def _revoked(_header, claims) -> bool:
        return is_token_revoked(claims["jti"])

    @jwt.unauthorized_loader
    def _missing(reason: str):
        return error_response(401, "unauthorized", reason)

    @jwt.invalid_token_loader
    def _invalid(reason: str):
        return error_response(401, "invalid_token", reason)

    @jwt.expired_token_loader
    def _expired(_header, _claims):
        return error_response(401, "token_expired", "The token has expired")

    @jwt.revoked_token_loader
    def _revoked_response(_header, _claims):
        return error_response(401, "token_revoked", "The token has been revoked")

    @jwt.user_lookup_error_loader
    def _no_user(_header, _claims):
        return error_response(401, "unauthorized", "The user no longer exists")

    @jwt.needs_fresh_token_loader
    def _fresh(_header, _claims):
        return error_response(401, "fresh_token_required", "A fresh token is required")

    @jwt.token_verification_failed_loader
    def _failed(_header, _claims):
        return error_response(401, "invalid_token", "Token verification failed")
