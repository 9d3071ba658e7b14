"""Sessions that end (logout, expiry, role change, deactivation), refresh-token rotation and
reuse detection, and socket set_status validation, at unit level (Flask and Socket.IO test
clients against the real handlers and database). The same over real processes is in
tests/test_e2e_sessions.py."""
from __future__ import annotations

import time

from flask_jwt_extended import decode_token

from app.extensions import db, socketio
from app.models import RefreshToken
from app.realtime import control
from tests.helpers import wait_for


def _login(client, user) -> dict:
    r = client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 200, r.json
    return r.json


def _refresh(client, token: str):
    return client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {token}"})


def _socket(app, client, token: str, namespace: str = "/feed"):
    return socketio.test_client(app, namespace=namespace, flask_test_client=client,
                                auth={"token": token})


def _ended(sio, namespace: str) -> list[str]:
    """Reasons of the session_ended events a test client received."""
    # get_received refuses a disconnected client; its queue still holds what came first.
    return [e["args"][0]["data"]["reason"] for e in sio.queue
            if e["namespace"] == namespace and e["name"] == "session_ended"]


def _wait_disconnected(sio, namespace: str) -> bool:
    wait_for(lambda: not sio.is_connected(namespace), 5, 0.02, f"{namespace} disconnected")
    return not sio.is_connected(namespace)


def test_refresh_rotates_and_a_reused_token_revokes_the_family(app, client, viewer):
    first = _login(client, viewer)
    r = _refresh(client, first["refresh_token"])
    assert r.status_code == 200 and set(r.json) == {"access_token", "refresh_token"}
    second = r.json
    assert second["refresh_token"] != first["refresh_token"]
    with app.app_context():
        fam = decode_token(first["refresh_token"])["fam"]
        assert decode_token(second["refresh_token"])["fam"] == fam
        assert decode_token(second["access_token"])["fam"] == fam
    third = _refresh(client, second["refresh_token"]).json  # the chain goes on
    assert client.get("/api/v1/auth/me", headers={
        "Authorization": f"Bearer {third['access_token']}"}).status_code == 200
    # The first token comes back: stolen. The whole family is revoked.
    reused = _refresh(client, first["refresh_token"])
    assert reused.status_code == 401 and reused.json["error"]["code"] == "token_reused"
    latest = _refresh(client, third["refresh_token"])
    assert latest.status_code == 401 and latest.json["error"]["code"] == "token_revoked"
    with app.app_context():
        rows = db.session.scalars(db.select(RefreshToken).filter_by(family=fam)).all()
        assert len(rows) == 3 and all(row.revoked_at is not None for row in rows)
    # Another session of the same user is untouched.
    other = _login(client, viewer)
    assert _refresh(client, other["refresh_token"]).status_code == 200


def test_reuse_ends_the_sockets_of_that_session_only(app, client, viewer):
    session = _login(client, viewer)
    other = _login(client, viewer)
    doomed = _socket(app, client, session["access_token"])
    spared = _socket(app, client, other["access_token"])
    rotated = _refresh(client, session["refresh_token"]).json
    assert doomed.is_connected("/feed")
    assert _refresh(client, session["refresh_token"]).json["error"]["code"] == "token_reused"
    assert _wait_disconnected(doomed, "/feed")
    assert _ended(doomed, "/feed") == ["session_revoked"]
    assert spared.is_connected("/feed")
    assert _refresh(client, rotated["refresh_token"]).status_code == 401


def test_a_refresh_token_from_before_rotation_works_once(client, viewer):
    r = _refresh(client, viewer.refresh)  # made by the test factory, no family
    assert r.status_code == 200 and "refresh_token" in r.json
    again = _refresh(client, viewer.refresh)
    assert again.status_code == 401
    assert _refresh(client, r.json["refresh_token"]).status_code == 200


def test_logout_revokes_the_sessions_refresh_token_and_ends_its_sockets(app, client, viewer):
    session = _login(client, viewer)
    other = _login(client, viewer)
    doomed = _socket(app, client, session["access_token"])
    doomed_jobs = _socket(app, client, session["access_token"], "/jobs")
    spared = _socket(app, client, other["access_token"])
    r = client.post("/api/v1/auth/logout",
                    headers={"Authorization": f"Bearer {session['access_token']}"})
    assert r.status_code == 204
    assert _wait_disconnected(doomed, "/feed") and _wait_disconnected(doomed_jobs, "/jobs")
    assert _ended(doomed, "/feed") == ["logout"]
    assert spared.is_connected("/feed")
    # The refresh token was not sent, and still no longer works: the session is over.
    r = _refresh(client, session["refresh_token"])
    assert r.status_code == 401 and r.json["error"]["code"] == "token_revoked"
    assert _refresh(client, other["refresh_token"]).status_code == 200
    assert not _socket(app, client, session["access_token"]).is_connected("/feed")


def test_role_change_ends_sockets_and_a_demoted_admin_loses_admin(app, client, admin, factory):
    other_admin = factory.user("admin", name="Other Admin")
    feed = _socket(app, client, other_admin.token, "/feed")
    admin_ns = _socket(app, client, other_admin.token, "/admin")
    bystander = _socket(app, client, admin.token, "/admin")
    assert admin_ns.is_connected("/admin")
    r = client.patch(f"/api/v1/users/{other_admin.id}", headers=admin.headers,
                     json={"role": "editor"})
    assert r.status_code == 200 and r.json["role"] == "editor"
    assert _wait_disconnected(admin_ns, "/admin") and _wait_disconnected(feed, "/feed")
    assert _ended(admin_ns, "/admin") == ["role_changed"]
    assert bystander.is_connected("/admin")
    # The same token reconnects under the new role: /feed yes, /admin no.
    assert _socket(app, client, other_admin.token, "/feed").is_connected("/feed")
    assert not _socket(app, client, other_admin.token, "/admin").is_connected("/admin")
    # Setting the role it already has ends nothing.
    again = _socket(app, client, other_admin.token, "/feed")
    client.patch(f"/api/v1/users/{other_admin.id}", headers=admin.headers, json={"role": "editor"})
    assert again.is_connected("/feed")


def test_deactivation_ends_sockets_tokens_and_sessions(app, client, admin, editor):
    session = _login(client, editor)
    sio = _socket(app, client, session["access_token"], "/episodes")
    r = client.patch(f"/api/v1/users/{editor.id}", headers=admin.headers, json={"is_active": False})
    assert r.status_code == 200 and r.json["is_active"] is False
    assert _wait_disconnected(sio, "/episodes")
    assert _ended(sio, "/episodes") == ["deactivated"]
    assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 401
    assert _refresh(client, session["refresh_token"]).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": editor.email,
                                                    "password": editor.password}).status_code == 401
    assert not _socket(app, client, editor.token, "/feed").is_connected("/feed")
    r = client.patch(f"/api/v1/users/{editor.id}", headers=admin.headers, json={"is_active": True})
    assert r.status_code == 200 and r.json["is_active"] is True
    assert client.get("/api/v1/auth/me", headers=editor.headers).status_code == 200
    # The session revoked at deactivation stays revoked.
    assert _refresh(client, session["refresh_token"]).status_code == 401


def test_patch_user_validation_and_rules(client, admin, editor, viewer):
    url = f"/api/v1/users/{editor.id}"
    for body in ({}, {"is_active": "no"}, {"is_active": 0}, {"role": "boss"}, {"unknown": 1}):
        r = client.patch(url, headers=admin.headers, json=body)
        assert r.status_code == 422, body
        assert set(r.json["error"]) == {"code", "message", "details"}
    assert client.patch(url, headers=viewer.headers, json={"is_active": False}).status_code == 403
    assert client.patch("/api/v1/users/99999", headers=admin.headers,
                        json={"is_active": False}).status_code == 404
    r = client.patch(f"/api/v1/users/{admin.id}", headers=admin.headers, json={"is_active": False})
    assert r.status_code == 409  # the last admin
    r = client.patch(url, headers=admin.headers, json={"role": "viewer", "is_active": False})
    assert r.status_code == 200 and (r.json["role"], r.json["is_active"]) == ("viewer", False)
    spec = client.get("/api/v1/openapi.json").json
    body = spec["paths"]["/api/v1/users/{user_id}"]["patch"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"role", "is_active"} <= set(spec["components"]["schemas"][ref]["properties"])


def test_expired_tokens_sockets_are_ended_and_reauth_extends(app, client, viewer):
    short = _socket(app, client, viewer.token)
    extended = _socket(app, client, viewer.token)
    with app.app_context():
        exp = decode_token(viewer.token)["exp"]
        from flask_jwt_extended import create_access_token

        fresh = create_access_token(identity=viewer.id, expires_delta=__import__(
            "datetime").timedelta(hours=2))
        stranger = create_access_token(identity=viewer.id + 1000)
    bad = extended.emit("reauth", {"token": stranger}, namespace="/feed", callback=True)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_token"
    ack = extended.emit("reauth", {"token": fresh}, namespace="/feed", callback=True)
    assert ack["ok"] and ack["expires_at"] > exp
    assert control.end_expired(now=exp + 1) == 1  # what the timer runs
    assert _wait_disconnected(short, "/feed")
    assert _ended(short, "/feed") == ["token_expired"]
    assert extended.is_connected("/feed")


def test_socket_set_status_is_validated_like_put_presence(client, app, viewer):
    app.config["SOCKET_EVENT_LIMITS"] = "set_status=20/5"  # six calls in a row: not the limit's test
    sio = _socket(app, client, viewer.token)
    for data in ({"status": "busy", "message": "x" * 256}, {"status": "sleeping"}, {}, "busy",
                 {"status": "busy", "message": 5}):
        ack = sio.emit("set_status", data, namespace="/feed", callback=True)
        rest = client.put("/api/v1/presence/me", headers=viewer.headers,
                          json=data if isinstance(data, dict) else None)
        assert ack["ok"] is False and ack["error"]["code"] == "validation_error", data
        assert rest.status_code == 422, data
        if isinstance(data, dict) and data:
            assert set(ack["error"]["details"]) == set(rest.json["error"]["details"]), data
    ack = sio.emit("set_status", {"status": "busy", "message": "x" * 255}, namespace="/feed",
                   callback=True)
    assert ack["ok"] and ack["presence"]["status"] == "busy"


def test_a_connect_racing_a_session_end_is_ended_but_a_later_reconnect_is_not(app, client, viewer):
    """A connect that read the user before the change and registers after the message went
    by is ended when it registers; one that began after the message is left alone."""
    sio = _socket(app, client, viewer.token)
    with app.app_context():
        sid = next(s for s, t in control._sockets.items() if t.user_id == viewer.id)
    began = time.time()
    control.untrack(sid)  # as if its connect were still in flight
    with app.app_context():
        assert control.end_sessions(reason="role_changed", user_id=viewer.id) == 0
        later = _socket(app, client, viewer.token)  # began after the message: stays
        control.track(sid, "/feed", viewer.id, viewer.token, began)  # began before: ended
    assert _wait_disconnected(sio, "/feed")
    assert _ended(sio, "/feed") == ["role_changed"]
    assert later.is_connected("/feed")


def test_expired_refresh_token_rows_are_purged_by_the_beat_task(app, client, viewer):
    from datetime import timedelta

    from app.models import utcnow
    from workers.maintenance import purge_refresh_tokens

    old, current = _login(client, viewer), _login(client, viewer)
    with app.app_context():
        jti = decode_token(old["refresh_token"])["jti"]
        db.session.execute(db.update(RefreshToken).where(RefreshToken.jti == jti)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert purge_refresh_tokens() == 1
        assert db.session.scalar(db.select(RefreshToken).filter_by(jti=jti)) is None
    assert _refresh(client, current["refresh_token"]).status_code == 200
    from app.tasks import BEAT_SCHEDULE

    name = "workers.maintenance.purge_refresh_tokens"
    assert name in {entry["task"] for entry in BEAT_SCHEDULE.values()}
    assert name in app.extensions["celery"].tasks
