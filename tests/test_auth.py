"""Auth: register, login, refresh, logout, me; roles and the CLI."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token


def test_register_and_login_round_trip(client):
    r = client.post("/api/v1/auth/register",
                    json={"email": "Ann@Example.com", "password": "s3cret-pass", "name": "Ann"})
    assert r.status_code == 201
    assert r.json["user"]["role"] == "viewer"
    assert r.json["user"]["email"] == "ann@example.com"
    assert "password" not in str(r.json)

    r = client.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": "s3cret-pass"})
    assert r.status_code == 200
    token = r.json["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["name"] == "Ann"


def test_register_duplicate_email_conflicts(client):
    body = {"email": "dup@example.com", "password": "password123", "name": "D"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    r = client.post("/api/v1/auth/register", json=body | {"email": "DUP@example.com"})
    assert r.status_code == 409
    assert r.json["error"]["code"] == "conflict"


def test_register_validation_names_fields(client):
    r = client.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "short"})
    assert r.status_code == 422
    details = r.json["error"]["details"]
    assert {"email", "password", "name"} <= set(details)


def test_bad_password_is_401(client, viewer):
    r = client.post("/api/v1/auth/login", json={"email": viewer.email, "password": "wrong-one"})
    assert r.status_code == 401
    assert r.json["error"]["code"] == "invalid_credentials"


def test_me_requires_token(client):
    r = client.get("/api/v1/auth/me")
    assert r.status_code == 401
    assert set(r.json["error"]) == {"code", "message", "details"}


def test_garbage_token_is_401(client):
    r = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401


def test_expired_token_is_401(app, client, viewer):
    with app.app_context():
        token = create_access_token(identity=viewer.id, expires_delta=timedelta(seconds=-1))
    r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json["error"]["code"] == "token_expired"


def test_logout_revokes_token(client, viewer):
    login = client.post("/api/v1/auth/login",
                        json={"email": viewer.email, "password": viewer.password}).json
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    r = client.post("/api/v1/auth/logout", headers=headers,
                    json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 204
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401
    assert r.json["error"]["code"] == "token_revoked"
    # The refresh token sent along is revoked too.
    r = client.post("/api/v1/auth/refresh",
                    headers={"Authorization": f"Bearer {login['refresh_token']}"})
    assert r.status_code == 401


def test_refresh_gives_a_working_access_token(client, viewer):
    r = client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {viewer.refresh}"})
    assert r.status_code == 200
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json['access_token']}"})
    assert me.json["id"] == viewer.id
    # An access token is not a refresh token.
    r = client.post("/api/v1/auth/refresh", headers=viewer.headers)
    assert r.status_code == 401


def test_access_token_expiry_defaults_to_15_minutes(app):
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"] == timedelta(minutes=15)
    assert app.config["JWT_REFRESH_TOKEN_EXPIRES"] > app.config["JWT_ACCESS_TOKEN_EXPIRES"]


def test_admin_changes_role_and_non_admin_cannot(client, admin, viewer):
    r = client.patch(f"/api/v1/users/{viewer.id}", headers=viewer.headers, json={"role": "admin"})
    assert r.status_code == 403
    r = client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers, json={"role": "editor"})
    assert r.status_code == 200 and r.json["role"] == "editor"
    # The new role applies at once, with the same token.
    r = client.post("/api/v1/episodes", headers=viewer.headers,
                    json={"title": "T", "episode_number": 1})
    assert r.status_code == 201
    r = client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers, json={"role": "god"})
    assert r.status_code == 422 and "role" in r.json["error"]["details"]


def test_users_list_is_admin_only_and_paginated(client, admin, factory):
    for _ in range(3):
        factory.user("viewer")
    assert client.get("/api/v1/users", headers=factory.user("editor").headers).status_code == 403
    page = client.get("/api/v1/users?limit=2", headers=admin.headers).json
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(f"/api/v1/users?limit=100&cursor={page['next_cursor']}",
                      headers=admin.headers).json
    ids = [u["id"] for u in page["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 5 and rest["next_cursor"] is None


def test_cli_create_admin_creates_and_promotes(app, runner, viewer, client):
    result = runner.invoke(args=["users", "create-admin", "boss@example.com", "--password", "pw123456"])
    assert result.exit_code == 0, result.output
    login = client.post("/api/v1/auth/login", json={"email": "boss@example.com", "password": "pw123456"})
    assert login.json["user"]["role"] == "admin"
    result = runner.invoke(args=["users", "create-admin", viewer.email])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/auth/me", headers=viewer.headers).json["role"] == "admin"
    result = runner.invoke(args=["users", "create-admin", "nobody@example.com"])
    assert result.exit_code != 0


@pytest.mark.redis
def test_cached_user_reads_no_row_and_changes_apply_at_once(app, client, admin, editor):
    """With Redis, a request's user comes from the cache filled by an earlier request (no
    SELECT on users); a role change or a deactivation drops it, so the next request sees it."""
    from sqlalchemy import event as sa_event

    from app.extensions import db
    from app.models import User

    assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 200  # fills
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with app.app_context():
        sa_event.listen(db.engine, "before_cursor_execute", count)
        try:
            me = client.get("/api/v1/auth/me", headers=editor.headers)
            created = client.post("/api/v1/episodes", headers=editor.headers,
                                  json={"title": "T", "episode_number": 1})
        finally:
            sa_event.remove(db.engine, "before_cursor_execute", count)
    assert created.status_code == 201 and me.status_code == 200
    assert me.json["email"] == editor.email and me.json["role"] == "editor"
    assert me.json["created_at"]  # a column the cache does not hold loads on access
    # By primary key, only /me's load of the columns the cache does not hold (delivery,
    # inline in tests, reads users in batches: users.id IN (...)).
    by_pk = [s for s in statements if "FROM users" in s and "users.id = " in s]
    assert len(by_pk) == 1 and "users.role" not in by_pk[0].split("FROM")[0]

    r = client.patch(f"/api/v1/users/{editor.id}", headers=admin.headers, json={"role": "viewer"})
    assert r.status_code == 200
    assert client.post("/api/v1/episodes", headers=editor.headers,
                       json={"title": "U", "episode_number": 2}).status_code == 403
    with app.app_context():
        db.session.get(User, editor.id).is_active = False
        db.session.commit()
    assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 401


@pytest.mark.redis
def test_cached_user_never_overwrites_the_sessions_own_copy(app, client, editor):
    """A user the session already holds (with an unsaved change) is returned as it is."""
    from app.auth import token_state
    from app.extensions import db
    from app.models import User

    assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 200  # fills
    with app.test_request_context():
        user = db.session.get(User, editor.id)
        user.name = "Changed"
        revoked, same = token_state("some-jti", editor.id)
        assert not revoked and same is user and user.name == "Changed"
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(User, editor.id).name == "Changed"


@pytest.mark.redis
def test_user_cache_seconds_zero_turns_the_cache_off(client, editor):
    from tests.conftest import make_test_app

    off = make_test_app(USER_CACHE_SECONDS=0)
    off_client = off.test_client()
    for _ in range(2):
        assert off_client.get("/api/v1/auth/me", headers=editor.headers).status_code == 200
    with off.app_context():
        from app.redis_client import get_redis

        assert get_redis().get(f"ec:user:{editor.id}") is None
