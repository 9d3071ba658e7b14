"""Accounts: registration, credentials, roles."""
from __future__ import annotations

from sqlalchemy import func, select

from app.errors import Conflict, NotFound, Unauthorized, ValidationError
from app.extensions import db
from app.models import User
from app.models.core import ROLES


def normalize_email(email: str) -> str:
    return email.strip().lower()


def get_by_email(email: str) -> User | None:
    return db.session.scalar(db.select(User).where(func.lower(User.email) == normalize_email(email)))


def register(*, email: str, password: str, name: str, role: str = "viewer",
             first_becomes_admin: bool = False) -> User:
    """Create an account; 409 when the email is taken.

    ``first_becomes_admin`` (the embedded default's first run): the instance's first account
    is made admin. "First" is decided after the insert commits, as the lowest id, so two
    registrations racing on an empty instance cannot both become admin.
    """
    if get_by_email(email) is not None:
        raise Conflict("This email is already registered", details={"email": ["Already registered."]})
    user = User(email=normalize_email(email), name=name.strip(), role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    if (first_becomes_admin and user.role != "admin"
            and db.session.scalar(select(func.min(User.id))) == user.id):
        user.role = "admin"
        db.session.commit()
    return user


def first_user_becomes_admin(enabled: bool) -> bool:
    """Whether the next registration would make an admin: enabled and no account yet."""
    return enabled and db.session.scalar(select(User.id).limit(1)) is None


def authenticate(*, email: str, password: str) -> User:
    user = get_by_email(email)
    if user is None or not user.check_password(password) or not user.is_active:
        raise Unauthorized("Invalid email or password", code="invalid_credentials")
    return user


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


def set_role(user_id: int, role: str) -> User:
    if role not in ROLES:
        raise ValidationError("Invalid role", details={"role": [f"Must be one of {ROLES}."]})
    user = get_user(user_id)
    if user.role == "admin" and role != "admin":
        admins = db.session.scalar(select(func.count()).select_from(User).where(
            User.role == "admin", User.is_active.is_(True)))
        if admins <= 1:
            raise Conflict("The last admin cannot be demoted")
    user.role = role
    db.session.commit()
    return user


def create_or_promote_admin(email: str, password: str | None, name: str | None = None) -> User:
    """Make ``email`` an admin: create the account, or promote an existing one."""
    user = get_by_email(email)
    if user is None:
        if not password:
            raise ValidationError("A password is needed to create a new admin")
        user = User(email=normalize_email(email), name=name or email.split("@")[0], role="admin")
        user.set_password(password)
        db.session.add(user)
    else:
        user.role = "admin"
        if password:
            user.set_password(password)
    db.session.commit()
    return user
