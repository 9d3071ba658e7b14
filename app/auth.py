"""JWT wiring: user loading, the token blocklist, role checks, JSON errors for auth.

Every authenticated request needs two facts: the token is not revoked, and its user
exists, is active and has a role. With Redis both come from one pipelined round trip:
the blocklist key and a cached copy of the user's few auth columns, merged into the
session without a SELECT (``merge(load=False)``; any other column loads on first access).
A change to a user row drops its cache entry after commit; a miss reads the row and
fills the entry for ``USER_CACHE_SECONDS``, which also bounds how long a fill racing a
change (read before the commit, written after the drop) can serve the old role.

Redis is only a cache: revocations are always recorded in ``revoked_tokens``, and Redis
is trusted to say "not revoked" only while its ``ec:blocklist:ready`` marker says it holds
every revocation (a Redis restarted empty has lost the marker too; the first reader then
reloads it). Any Redis error sends the request to the database instead.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import wraps

import redis
from flask import Flask, current_app, g
from flask_jwt_extended import current_user, decode_token, verify_jwt_in_request
from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import make_transient_to_detached, object_session
from sqlalchemy.orm.util import identity_key

from app import logs
from app.errors import DatabaseUnavailable, Forbidden, database_unavailable, error_response
from app.extensions import db, jwt
from app.models import RevokedToken, User, utcnow
from app.models.base import insert_for_dialect
from app.redis_client import get_redis, pending_writes, when_redis_returns
from app.services.transaction import on_commit

log = logging.getLogger(__name__)

ROLE_RANK = {"viewer": 0, "editor": 1, "admin": 2}


BLOCKLIST_READY = "ec:blocklist:ready"  # Redis holds every unexpired revocation
BLOCKLIST_LOADING = "ec:blocklist:loading"
# Reloaded at least this often: bounds how long an entry Redis missed can be missing (a
# revocation whose Redis write failed in a process that died before Redis came back).
BLOCKLIST_READY_SECONDS = 300


def _blocklist_key(jti: str) -> str:
    return f"ec:blocklist:{jti}"


def _ttl(expires_at: datetime) -> int:
    return max(1, int((expires_at - utcnow()).total_seconds()) + 1)


def revoke_token(jti: str, expires_at: datetime) -> None:
    """Put a token on the blocklist until it would have expired anyway.

    PostgreSQL holds the record (``revoked_tokens``); Redis only caches it. The row is
    written in the caller's unit (no commit here: the service's ``atomic()`` commits it
    with the rest of the logout or rotation); the Redis key is written once that commits.
    When the Redis write fails, the key is written once Redis answers again, and the
    "blocklist complete" marker is dropped then, so readers check the database until it
    is reloaded.
    """
    # ON CONFLICT DO NOTHING: revoked at the same moment by another request is no error,
    # and leaves the caller's transaction usable.
    db.session.execute(insert_for_dialect(RevokedToken.__table__)
                       .values(jti=jti, expires_at=expires_at)
                       .on_conflict_do_nothing(index_elements=["jti"]))
    on_commit(db.session(), lambda: _cache_revocation(jti, expires_at))


def _cache_revocation(jti: str, expires_at: datetime) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.set(_blocklist_key(jti), "1", ex=_ttl(expires_at))
    except RedisError as exc:
        log.warning("blocklist write to Redis failed, recorded in the database: %s", exc)

        def later(client: redis.Redis) -> None:
            client.pipeline(transaction=False).set(_blocklist_key(jti), "1", ex=_ttl(expires_at)) \
                .delete(BLOCKLIST_READY).execute()

        when_redis_returns(later)


def _revoked_in_database(jti: str) -> bool:
    return db.session.scalar(db.select(RevokedToken.id).filter_by(jti=jti)) is not None


def load_blocklist(client: redis.Redis) -> bool:
    """Copy the unexpired revocations into Redis and mark the blocklist complete.

    Run by the first reader that finds the marker missing (Redis restarted empty, or a
    write was missed); a short lock keeps the others on the database meanwhile. A revoke
    committing during the copy writes its own key, so nothing falls between the two.
    """
    if not client.set(BLOCKLIST_LOADING, "1", nx=True, ex=30):
        return False
    rows = db.session.execute(db.select(RevokedToken.jti, RevokedToken.expires_at)
                              .where(RevokedToken.expires_at > utcnow())).all()
    pipe = client.pipeline(transaction=False)
    for jti, expires_at in rows:
        pipe.set(_blocklist_key(jti), "1", ex=_ttl(expires_at))
    pipe.set(BLOCKLIST_READY, "1", ex=BLOCKLIST_READY_SECONDS).delete(BLOCKLIST_LOADING)
    pipe.execute()
    return True


def is_token_revoked(jti: str) -> bool:
    """Redis first when it holds the whole blocklist; the database otherwise."""
    client = get_redis()
    if client is not None:
        try:
            revoked, ready = (client.pipeline(transaction=False)
                              .exists(_blocklist_key(jti)).exists(BLOCKLIST_READY).execute())
            if revoked:
                return True
            if ready and not pending_writes():
                return False
        except RedisError:
            pass
    return _revoked_in_database(jti)


_CACHED_COLUMNS = ("email", "name", "role", "is_active")


def _user_key(user_id: int) -> str:
    return f"ec:user:{user_id}"


def _active(user: User | None) -> User | None:
    return user if user is not None and user.is_active else None


def _cached_user(user_id: int, cached: str) -> User:
    """The user from its cache entry, as a persistent object of this session (no SELECT).

    A user this session already holds is returned as it is: merging over it would mark
    any unsaved change to it clean, and lose it.
    """
    held = db.session.identity_map.get(identity_key(User, user_id))
    if held is not None:
        return held
    user = User(id=user_id, **{column: value for column, value in json.loads(cached).items()
                               if column in _CACHED_COLUMNS})
    make_transient_to_detached(user)  # the other columns are expired: they load on access
    return db.session.merge(user, load=False)


def token_state(jti: str, user_id: int) -> tuple[bool, User | None]:
    """(revoked, the token's active user or None), in one Redis round trip when cached.

    Redis down (an error, or its breaker open): both facts come from the database.
    """
    client = get_redis()
    if client is None:
        return _revoked_in_database(jti), _active(db.session.get(User, user_id))
    try:
        revoked, ready, cached = (client.pipeline(transaction=False)
                                  .exists(_blocklist_key(jti)).exists(BLOCKLIST_READY)
                                  .get(_user_key(user_id)).execute())
    except RedisError:
        return _revoked_in_database(jti), _active(db.session.get(User, user_id))
    if revoked:
        return True, None
    if not ready or pending_writes():  # this process has blocklist writes still to make
        if not ready:
            try:
                load_blocklist(client)
            except RedisError as exc:
                log.warning("blocklist reload failed: %s", exc)
        if _revoked_in_database(jti):
            return True, None
    if cached is not None:
        return False, _active(_cached_user(user_id, cached))
    user = db.session.get(User, user_id)
    ttl = current_app.config["USER_CACHE_SECONDS"]
    if user is not None and ttl > 0:  # 0 turns the cache off
        try:
            client.set(_user_key(user_id),
                       json.dumps({c: getattr(user, c) for c in _CACHED_COLUMNS}), ex=ttl)
        except RedisError:
            pass  # the next request reads the row again
    return False, _active(user)


def forget_cached_user(user_id: int) -> None:
    """Drop a user's cache entry; if Redis is away, drop it once it is back."""
    client = get_redis()
    if client is None:
        return
    try:
        client.delete(_user_key(user_id))
    except RedisError:
        when_redis_returns(lambda client: client.delete(_user_key(user_id)))


@event.listens_for(User, "after_update")
@event.listens_for(User, "after_delete")
def _user_changed(_mapper, _connection, target: User) -> None:
    session = object_session(target)
    if session is not None:
        user_id = target.id
        on_commit(session, lambda: forget_cached_user(user_id))


def load_user_from_token(encoded: str) -> User | None:
    """Decode an access token outside a request (Socket.IO connect); None if not valid.

    Raises ``DatabaseUnavailable`` when the token cannot be checked for that reason.
    """
    try:
        claims = decode_token(encoded)
    except Exception:  # noqa: BLE001 - expired, bad signature, malformed: all refused
        return None
    if claims.get("type") != "access":
        return None
    try:
        revoked, user = token_state(claims["jti"], int(claims["sub"]))
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable("The database is unavailable; try again shortly") from exc
        raise
    return None if revoked else user


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

    # flask-jwt-extended asks the blocklist first, then for the user: the first call
    # fetches both (token_state) and leaves the user for the second in ``g``.
    @jwt.token_in_blocklist_loader
    def _revoked(_header, claims) -> bool:
        revoked, user = token_state(claims["jti"], int(claims["sub"]))
        g.ec_token_user = (claims["jti"], user)
        return revoked

    @jwt.user_lookup_loader
    def _lookup(_header, claims) -> User | None:
        logs.bind(user_id=int(claims["sub"]))  # every later log line of this request names it
        stashed = g.pop("ec_token_user", None)
        if stashed is not None and stashed[0] == claims["jti"]:
            return stashed[1]
        return _active(db.session.get(User, int(claims["sub"])))

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
