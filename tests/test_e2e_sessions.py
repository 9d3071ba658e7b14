"""End to end: sessions that end and reconnect replay, over real web processes (eventlet,
``python wsgi.py``), a real Celery worker and python-socketio clients."""
from __future__ import annotations

import time

import pytest
import requests
import socketio as sio_client
from sqlalchemy import delete

from tests.helpers import SocketClient as Client
from tests.processes import web_server

pytestmark = pytest.mark.redis


class Watched(Client):
    """A client that also records its disconnects."""

    def __init__(self, url: str, token: str, namespaces: list[str], **auth):
        self.lost: list[str] = []
        super().__init__(url, token, namespaces, **auth)
        for ns in namespaces:
            self.sio.on("disconnect", self._lost(ns), namespace=ns)

    def _lost(self, ns):
        def handler(*_args):
            self.lost.append(ns)
        return handler

    def wait_lost(self, namespace: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while namespace not in self.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        return namespace in self.lost


def _login(url: str, user) -> dict:
    r = requests.post(f"{url}/api/v1/auth/login", timeout=10,
                      json={"email": user.email, "password": user.password})
    assert r.status_code == 200, r.text
    return r.json()


def _refused(url: str, namespace: str, token: str) -> bool:
    client = sio_client.Client(reconnection=False)
    try:
        client.connect(url, namespaces=[namespace], auth={"token": token},
                       transports=["websocket"], wait_timeout=5)
    except sio_client.exceptions.ConnectionError:
        return True
    client.disconnect()
    return False


def test_logout_on_one_process_ends_the_sessions_socket_on_another(app, server, viewer):
    session = _login(server.url, viewer)
    other_session = _login(server.url, viewer)
    with web_server(async_mode="eventlet") as other:
        doomed = Watched(other.url, session["access_token"], ["/feed", "/episodes"])
        spared = Watched(other.url, other_session["access_token"], ["/feed"])
        try:
            r = requests.post(f"{server.url}/api/v1/auth/logout", timeout=10,
                              headers={"Authorization": f"Bearer {session['access_token']}"})
            assert r.status_code == 204
            assert doomed.wait_lost("/feed") and doomed.wait_lost("/episodes")
            [ended] = doomed.wait("session_ended", where=lambda e: True)
            assert ended["data"]["reason"] == "logout"
            assert spared.sio.connected and not spared.lost
            r = requests.post(f"{other.url}/api/v1/auth/refresh", timeout=10,
                              headers={"Authorization": f"Bearer {session['refresh_token']}"})
            assert r.status_code == 401
            assert "Traceback" not in other.output() and "Traceback" not in server.output()
        finally:
            doomed.close()
            spared.close()


def test_expired_access_token_disconnects_the_socket(app, viewer):
    with web_server(async_mode="eventlet", JWT_ACCESS_TOKEN_SECONDS="2",
                    SESSION_CHECK_SECONDS="0.5") as short:
        session = _login(short.url, viewer)
        c = Watched(short.url, session["access_token"], ["/feed"])
        try:
            assert c.wait_lost("/feed")
            [ended] = c.wait("session_ended")
            assert ended["data"]["reason"] == "token_expired"
            assert _refused(short.url, "/feed", session["access_token"])
            # A refreshed token connects again.
            fresh = requests.post(f"{short.url}/api/v1/auth/refresh", timeout=10, headers={
                "Authorization": f"Bearer {session['refresh_token']}"}).json()
            assert not _refused(short.url, "/feed", fresh["access_token"])
        finally:
            c.close()


def test_demoted_admin_loses_admin_at_once(app, server, admin, factory):
    demoted = factory.user("admin", name="Soon Editor")
    c = Watched(server.url, demoted.token, ["/admin", "/feed"])
    try:
        r = requests.patch(f"{server.url}/api/v1/users/{demoted.id}", headers=admin.headers,
                           json={"role": "editor"}, timeout=10)
        assert r.status_code == 200
        assert c.wait_lost("/admin") and c.wait_lost("/feed")
        assert c.wait("session_ended")[0]["data"]["reason"] == "role_changed"
        assert _refused(server.url, "/admin", demoted.token)
        assert not _refused(server.url, "/feed", demoted.token)
    finally:
        c.close()


def test_deactivation_disconnects_the_user_everywhere(app, server, admin, editor):
    with web_server(async_mode="eventlet") as other:
        here = Watched(server.url, editor.token, ["/episodes"])
        there = Watched(other.url, editor.token, ["/jobs"])
        try:
            r = requests.patch(f"{other.url}/api/v1/users/{editor.id}", headers=admin.headers,
                               json={"is_active": False}, timeout=10)
            assert r.status_code == 200 and r.json()["is_active"] is False
            assert here.wait_lost("/episodes") and there.wait_lost("/jobs")
            assert here.wait("session_ended")[0]["data"]["reason"] == "deactivated"
            assert _refused(server.url, "/feed", editor.token)
            assert requests.get(f"{server.url}/api/v1/auth/me", headers=editor.headers,
                                timeout=10).status_code == 401
        finally:
            here.close()
            there.close()


def test_refresh_rotation_and_reuse_over_rest(server, viewer):
    first = _login(server.url, viewer)

    def refresh(token):
        return requests.post(f"{server.url}/api/v1/auth/refresh", timeout=10,
                             headers={"Authorization": f"Bearer {token}"})

    second = refresh(first["refresh_token"])
    assert second.status_code == 200 and set(second.json()) == {"access_token", "refresh_token"}
    c = Watched(server.url, second.json()["access_token"], ["/feed"])
    try:
        reused = refresh(first["refresh_token"])
        assert reused.status_code == 401 and reused.json()["error"]["code"] == "token_reused"
        assert c.wait_lost("/feed")  # the session's socket goes too
        assert refresh(second.json()["refresh_token"]).json()["error"]["code"] == "token_revoked"
    finally:
        c.close()


def _episode(server, editor, title: str) -> dict:
    r = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers, timeout=10,
                      json={"title": title, "episode_number": 1})
    assert r.status_code == 201
    return r.json()


def _patch_and_wait_delivered(app, server, editor, episode_id: int, titles) -> list[int]:
    """Update an episode; wait until the worker delivered every event; their ids."""
    from app.extensions import db
    from app.models import DomainEvent

    for title in titles:
        requests.patch(f"{server.url}/api/v1/episodes/{episode_id}", headers=editor.headers,
                       json={"title": title}, timeout=10)
    deadline = time.monotonic() + 20
    with app.app_context():
        while time.monotonic() < deadline:
            rows = db.session.execute(db.select(DomainEvent.id, DomainEvent.delivered_at).where(
                DomainEvent.name == "episode_updated",
                DomainEvent.resource_id == episode_id)).all()
            db.session.rollback()
            if len(rows) >= len(titles) and all(r.delivered_at for r in rows):
                return sorted(r.id for r in rows)
            time.sleep(0.1)
    raise AssertionError("the worker did not deliver the events")


def test_reconnect_replay_comes_from_the_buffer_the_worker_wrote(app, server, worker, editor,
                                                                  viewer):
    from app.extensions import db
    from app.models import DomainEvent

    ep = _episode(server, editor, "Buffered")
    [seen] = _patch_and_wait_delivered(app, server, editor, ep["id"], ["B0"])
    ids = _patch_and_wait_delivered(app, server, editor, ep["id"], ["B0", "B1", "B2"])[1:]
    # Take the events out of the outbox behind the product's back (no purge mark): only the
    # shared buffer, written by the worker process when it emitted them, still has them.
    with app.app_context():
        db.session.execute(delete(DomainEvent).where(DomainEvent.id.in_(ids)))
        db.session.commit()
    c = Client(server.url, viewer.token, ["/episodes"], last_event_id=seen)
    try:
        missed = c.wait("episode_updated", count=2)
        assert [m["data"]["title"] for m in missed] == ["B1", "B2"]
        assert [m["id"] for m in missed] == ids
    finally:
        c.close()


def test_client_past_the_retained_history_gets_resync_required(app, server, worker, editor,
                                                                 viewer):
    from app.services import delivery

    ep = _episode(server, editor, "Purged")
    [seen] = _patch_and_wait_delivered(app, server, editor, ep["id"], ["P0"])
    _patch_and_wait_delivered(app, server, editor, ep["id"], ["P0", "P1"])
    with app.app_context():
        assert delivery.purge_delivered(0) >= 2  # purge_events with a retention of 0 days
    c = Client(server.url, viewer.token, ["/episodes"], last_event_id=seen)
    try:
        [resync] = c.wait("resync_required")
        assert resync["data"]["reason"] == "history_purged"
        assert resync["data"]["last_event_id"] > seen
        assert not [e for e in c.seen if e["event"] == "episode_updated"]
        # Live events follow as usual.
        assert c.call("join", {"episode_id": ep["id"]}, "/episodes")["ok"]
        requests.patch(f"{server.url}/api/v1/episodes/{ep['id']}", headers=editor.headers,
                       json={"title": "P2"}, timeout=10)
        assert c.wait("episode_updated")[0]["data"]["title"] == "P2"
    finally:
        c.close()
