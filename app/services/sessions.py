"""Login sessions: refresh-token families, rotation, reuse detection, and ending a session.

A login starts a family (a random id in the ``fam`` claim of every token of that session,
access and refresh). ``POST /auth/refresh`` uses a refresh token once: it is marked used
and the next one of the family is returned with the new access token. A used token that
comes back means two parties hold the session (a stolen token, or a replay), so the whole
family is revoked and its sockets are ended; everyone must log in again.

Revocations of single tokens go through ``app.auth.revoke_token`` (the blocklist); the
families live in PostgreSQL (``refresh_tokens``), so they survive a Redis restart.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import delete, select, update

from app.auth import revoke_token
from app.errors import Unauthorized
from app.extensions import db
from app.models import RefreshToken, User, utcnow
from app.realtime import control
from app.services.transaction import atomic


def _new_family() -> str:
    return uuid.uuid4().hex


def _issue(user: User, family: str, *, fresh: bool) -> dict:
    """An access and a refresh token of the family; the refresh token is recorded (no commit)."""
    claims = {"fam": family}
    access = create_access_token(identity=user, fresh=fresh, additional_claims=claims)
    refresh = create_refresh_token(identity=user, additional_claims=claims)
    decoded = decode_token(refresh)
    db.session.add(RefreshToken(jti=decoded["jti"], family=family, user_id=user.id,
                                expires_at=datetime.fromtimestamp(decoded["exp"], UTC)))
    return {"access_token": access, "refresh_token": refresh}


def login(user: User) -> dict:
    """Tokens of a new session (login)."""
    with atomic():
        return _issue(user, _new_family(), fresh=True)


def rotate(user: User, claims: dict) -> dict:
    """Exchange a valid refresh token (its claims) for a new access and refresh token.

    The row is locked, so of two concurrent uses of one token exactly one succeeds and the
    other is a reuse. A refresh token issued before rotation existed (no row) is taken
    once: it is revoked and a new family starts.
    """
    reused = None
    with atomic():
        row = db.session.scalar(select(RefreshToken).where(RefreshToken.jti == claims["jti"])
                                .with_for_update())
        if row is None:
            revoke_token(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))
            return _issue(user, _new_family(), fresh=False)
        if row.revoked_at is not None:
            raise Unauthorized("The session has been revoked", code="token_revoked")
        if row.used_at is not None:
            # The revocation commits (the unit ends cleanly) before the refusal is raised.
            reused = row.family
            revoke_family(reused)
        else:
            row.used_at = utcnow()
            return _issue(user, row.family, fresh=False)
    control.end_sessions(reason="session_revoked", family=reused)
    raise Unauthorized("This refresh token was already used; the session is revoked",
                       code="token_reused")


def revoke_family(family: str) -> int:
    """Revoke every refresh token of a session (no commit)."""
    return db.session.execute(
        update(RefreshToken).where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount


def revoke_user_sessions(user_id: int) -> int:
    """Revoke every refresh token of a user (no commit): deactivation, say."""
    return db.session.execute(
        update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount


def logout(claims: dict, refresh_token: str | None = None) -> None:
    """End the session the token belongs to: the token, the session's refresh tokens and
    the sockets opened with it, on every web process."""
    families = [claims["fam"]] if claims.get("fam") else []
    other = None
    if refresh_token and claims.get("type") == "access":
        try:
            other = decode_token(refresh_token, allow_expired=True)
        except Exception:  # noqa: BLE001 - an undecodable token is simply not revoked
            other = None
    with atomic():
        revoke_token(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))
        if other is not None:
            revoke_token(other["jti"], datetime.fromtimestamp(other["exp"], UTC))
            if other.get("fam") and other.get("fam") not in families \
                    and str(other.get("sub")) == str(claims["sub"]):
                families.append(other["fam"])
        for family in families:
            revoke_family(family)
    control.end_sessions(reason="logout", jti=claims["jti"],
                         family=families[0] if families else None)
    for family in families[1:]:
        control.end_sessions(reason="logout", family=family)


def purge_expired(batch_size: int = 5000) -> int:
    """Delete refresh-token rows past their expiry, in batches: nothing can present them any
    more (the signature check refuses an expired token before its row is looked at)."""
    total = 0
    while True:
        with atomic():  # one short transaction per batch
            ids = list(db.session.scalars(select(RefreshToken.id).where(
                RefreshToken.expires_at < utcnow()).limit(batch_size)))
            if ids:
                db.session.execute(delete(RefreshToken).where(RefreshToken.id.in_(ids)))
        if not ids:
            return total
        total += len(ids)


def end_user_sockets(user_id: int, reason: str) -> int:
    """A user's role or account changed: their sockets close everywhere and reconnect (or
    not) under the new rules."""
    return control.end_sessions(reason=reason, user_id=user_id)
