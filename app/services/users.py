"""Accounts: registration, credentials, roles."""
from __future__ import annotations

import secrets
from functools import cache
from typing import Any

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import Conflict, NotFound, Unauthorized, ValidationError
from app.extensions import db
from app.models import User
from app.models.core import ROLES, normalize_email
from app.pagination import paginate
from app.services import events, sessions
from app.services.transaction import atomic


def get_by_email(email: str) -> User | None:
    return db.session.scalar(db.select(User).where(func.lower(User.email) == normalize_email(email)))


def register(*, email: str, password: str, name: str, role: str = "viewer",
             first_becomes_admin: bool = False) -> User:
    """Create an account; 409 when the email is taken.

    ``first_becomes_admin`` (the embedded default's first run): the instance's first account
    is made admin. "First" is decided after the insert commits, as the lowest id, so two
    registrations racing on an empty instance cannot both become admin.
    """
    with atomic():
        if get_by_email(email) is not None:
            raise Conflict("This email is already registered",
                           details={"email": ["Already registered."]})
        user = User(email=normalize_email(email), name=name.strip(), role=role)
        user.set_password(password)
        db.session.add(user)
        db.session.flush()
        _record(user, "user_registered", "created", actor=user, payload={"role": user.role})
    if first_becomes_admin and user.role != "admin":
        with atomic():
            if db.session.scalar(select(func.min(User.id))) == user.id:
                _record(user, "user_role_changed", "updated", actor=None,
                        changes={"role": {"before": user.role, "after": "admin"}})
                user.role = "admin"
    return user


def _record(user: User, name: str, action: str, *, actor: User | None,
            payload: dict | None = None, changes: dict | None = None) -> None:
    """An account event: to the activity log (admins, and the actor's own feed) and to the
    /admin room only (no ``notify_user_ids``: other users never hear of accounts)."""
    events.record(name, action=action, actor=actor, resource_type="user", resource_id=user.id,
                  resource_name=user.name, payload={"user_id": user.id, **(payload or {})},
                  changes=changes)


@cache
def dummy_password_hash() -> str:
    """A hash made like every stored one (same method and cost), of a password nobody has."""
    return generate_password_hash(secrets.token_urlsafe(32))


def first_user_becomes_admin(enabled: bool) -> bool:
    """Whether the next registration would make an admin: enabled and no account yet."""
    return enabled and db.session.scalar(select(User.id).limit(1)) is None


def authenticate(*, email: str, password: str) -> User:
    """The active user with these credentials; 401 ``invalid_credentials`` otherwise.

    An unknown email is checked against a dummy hash, so it costs the same scrypt work as
    a known one: the answer's timing does not tell which emails have accounts.
    """
    user = get_by_email(email)
    if user is None:
        check_password_hash(dummy_password_hash(), password)
        raise Unauthorized("Invalid email or password", code="invalid_credentials")
    if not user.check_password(password) or not user.is_active:
        raise Unauthorized("Invalid email or password", code="invalid_credentials")
    return user


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


def list_users(*, cursor: str | None, limit: Any) -> dict:
    """Every user, newest first: a page of ``User`` rows (``items``) and the next cursor.

    Rows, not dicts: the view serializes them (serializers live at the API edge).
    """
    return paginate(select(User), User.id, lambda user: user, cursor=cursor, limit=limit)


def _is_last_active_admin(user: User) -> bool:
    if user.role != "admin" or not user.is_active:
        return False
    admins = db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.is_active.is_(True)))
    return admins <= 1


def update_user(user_id: int, *, role: str | None = None, is_active: bool | None = None,
                actor: User | None = None) -> User:
    """Change a user's role and/or active flag (admin). The user's live sockets are ended on
    every web process after the commit: a demoted admin stops hearing ``/admin`` at once,
    a deactivated user is cut off (and their sessions' refresh tokens revoked). Each change
    records an event (``user_role_changed``, ``user_deactivated``, ``user_reactivated``)."""
    if role is not None and role not in ROLES:
        raise ValidationError("Invalid role", details={"role": [f"Must be one of {ROLES}."]})
    with atomic():
        user = get_user(user_id)
        demoting = role is not None and role != "admin"
        deactivating = is_active is False and user.is_active
        reactivating = is_active is True and not user.is_active
        if (demoting or deactivating) and _is_last_active_admin(user):
            raise Conflict("The last admin cannot be demoted" if demoting
                           else "The last admin cannot be deactivated")
        role_changed = role is not None and role != user.role
        if role_changed:
            _record(user, "user_role_changed", "updated", actor=actor,
                    changes={"role": {"before": user.role, "after": role}})
        if deactivating or reactivating:
            _record(user, "user_deactivated" if deactivating else "user_reactivated", "updated",
                    actor=actor, changes={"is_active": {"before": user.is_active,
                                                        "after": is_active}})
        if role is not None:
            user.role = role
        if is_active is not None:
            user.is_active = is_active
        if deactivating:
            sessions.revoke_user_sessions(user.id)
    if deactivating:
        sessions.end_user_sockets(user.id, "deactivated")
    elif role_changed:
        sessions.end_user_sockets(user.id, "role_changed")
    return user


def set_role(user_id: int, role: str, *, actor: User | None = None) -> User:
    return update_user(user_id, role=role, actor=actor)


def create_or_promote_admin(email: str, password: str | None, name: str | None = None) -> User:
    """Make ``email`` an admin: create the account, or promote an existing one."""
    with atomic():
        user = get_by_email(email)
        if user is None:
            if not password:
                raise ValidationError("A password is needed to create a new admin")
            user = User(email=normalize_email(email), name=name or email.split("@")[0],
                        role="admin")
            user.set_password(password)
            db.session.add(user)
            db.session.flush()
            _record(user, "user_registered", "created", actor=None, payload={"role": "admin"})
        else:
            if user.role != "admin":
                _record(user, "user_role_changed", "updated", actor=None,
                        changes={"role": {"before": user.role, "after": "admin"}})
            user.role = "admin"
            if password:
                user.set_password(password)
    return user
