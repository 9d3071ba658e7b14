"""``notification`` and ``notification_read`` go through the outbox: a reconnecting client
gets the ones it missed (its own user room only), and no other user's socket ever does."""
from __future__ import annotations

import time

from sqlalchemy import select

from app.extensions import db, socketio
from app.models import DomainEvent, Notification
from app.services import replay

API = "/api/v1"
PRIVATE = ("notification", "notification_read")


def _connect(app, client, user, namespace, **auth):
    sio = socketio.test_client(app, namespace=namespace, flask_test_client=client,
                               auth={"token": user.token, **auth})
    assert sio.is_connected(namespace)
    return sio


def _received(sio, namespace, *, until=None, count=1, timeout=5.0) -> list[dict]:
    """(name, envelope) received until ``count`` events named ``until`` arrived (or time is up)."""
    got: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += [(e["name"], e["args"][0]) for e in sio.get_received(namespace)]
        if until is not None and sum(name == until for name, _ in got) >= count:
            break
        time.sleep(0.02)
    return got


def _send(client, admin, user_id, title):
    r = client.post(f"{API}/notifications", headers=admin.headers,
                    json={"user_ids": [user_id], "title": title})
    assert r.status_code == 202, r.json


def _mine(app, user_id, title) -> Notification:
    with app.app_context():
        return db.session.scalars(select(Notification).where(
            Notification.user_id == user_id, Notification.title == title)).one()


def _drop_buffer(app):
    if not app.config.get("REDIS_URL"):
        replay.reset_local()
        return
    from app.redis_client import get_redis

    with app.app_context():
        get_redis().delete(replay.KEY, replay.FLOOR_KEY)


def test_missed_notifications_and_reads_are_replayed_to_their_user_only(app, client, admin,
                                                                         editor, viewer):
    others = [(_connect(app, client, viewer, "/feed"), "/feed"),
              (_connect(app, client, admin, "/feed"), "/feed"),
              (_connect(app, client, admin, "/admin"), "/admin")]
    tab = _connect(app, client, editor, "/feed")
    _send(client, admin, editor.id, "before")
    [(_, before)] = [e for e in _received(tab, "/feed", until="notification") if e[0] == "notification"]
    assert before["data"]["title"] == "before"
    seen = before["id"]
    tab.disconnect("/feed")

    # Meanwhile: two notifications arrive, and the editor reads one from another device.
    _send(client, admin, editor.id, "missed 1")
    _send(client, admin, editor.id, "missed 2")
    first = _mine(app, editor.id, "missed 1")
    r = client.post(f"{API}/notifications/{first.id}/read", headers=editor.headers)
    assert r.status_code == 200

    again = _connect(app, client, editor, "/feed", last_event_id=seen)
    replayed = [e for e in _received(again, "/feed", until="notification_read") if e[0] in PRIVATE]
    assert [(name, env["data"].get("title")) for name, env in replayed] == [
        ("notification", "missed 1"), ("notification", "missed 2"), ("notification_read", None)]
    assert replayed[-1][1]["data"] == {"ids": [first.id], "unread_count": 2, "unread_capped": False}
    ids = [env["id"] for _, env in replayed]
    assert ids == sorted(ids) and ids[0] > seen  # outbox ids, in order, after the client's
    # The pushes are the notifications as GET returns them, with their cause's actor.
    got = client.get(f"{API}/notifications/{first.id}", headers=editor.headers).json
    assert replayed[0][1]["data"] == {**got, "read": False, "read_at": None}
    assert replayed[0][1]["actor"] == {"id": admin.id, "name": admin.name}

    # From PostgreSQL (the buffer gone) the same envelopes come back.
    _drop_buffer(app)
    from_db = _connect(app, client, editor, "/feed", last_event_id=seen)
    again_db = [e for e in _received(from_db, "/feed", until="notification_read") if e[0] in PRIVATE]
    assert again_db == replayed

    # Nobody else ever got them: not live, not on /admin, not in their own replay.
    for sio, namespace in others:
        assert not [e for e in _received(sio, namespace, timeout=0.5) if e[0] in PRIVATE]
    nosy = _connect(app, client, viewer, "/feed", last_event_id=seen)
    assert not [e for e in _received(nosy, "/feed", timeout=1.0) if e[0] in PRIVATE]
    with app.app_context():
        names = db.session.scalars(select(DomainEvent.name).where(DomainEvent.id > seen)).all()
    assert names.count("notification") == 2 and names.count("notification_read") == 1
