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


def _notifications(sio, namespace, *, count=1, timeout=5.0) -> list[dict]:
    """The ``notification`` envelopes received: ``count`` of them, then a short wait for more."""
    got = _received(sio, namespace, until="notification", count=count, timeout=timeout)
    got += _received(sio, namespace, timeout=0.5)
    return [env for name, env in got if name == "notification"]


def test_a_broadcast_is_one_event_and_each_user_replays_only_its_own(app, client, factory, admin):
    """One claim's pushes are ONE outbox event; live and replayed, each user gets its own
    envelope (the event's id, its own notification) and never another user's."""
    users = [factory.user("viewer") for _ in range(5)]
    away, other = users[0], users[1]
    tab = _connect(app, client, away, "/feed")
    _send(client, admin, away.id, "before")
    [before] = _notifications(tab, "/feed")
    seen = before["id"]
    tab.disconnect("/feed")
    live = {user.id: _connect(app, client, user, "/feed") for user in users[1:]}
    admin_socket = _connect(app, client, admin, "/admin")

    r = client.post(f"{API}/notifications", headers=admin.headers,
                    json={"user_ids": [user.id for user in users], "title": "broadcast"})
    assert r.status_code == 202, r.json
    with app.app_context():
        [batch] = db.session.scalars(select(DomainEvent).where(
            DomainEvent.id > seen, DomainEvent.name == "notification")).all()
    assert sorted(uid for uid, _own in batch.payload["_batch"]["users"]) == sorted(u.id for u in users)
    live_got = {}
    for user_id, sio in live.items():
        [env] = _notifications(sio, "/feed")
        assert env["id"] == batch.id and env["data"]["user_id"] == user_id
        assert env["data"]["id"] == _mine(app, user_id, "broadcast").id
        live_got[user_id] = env

    again = _connect(app, client, away, "/feed", last_event_id=seen)
    [mine] = _notifications(again, "/feed")
    row = _mine(app, away.id, "broadcast")
    got = client.get(f"{API}/notifications/{row.id}", headers=away.headers).json
    assert mine["id"] == batch.id > seen
    assert mine["data"] == got and mine["actor"] == {"id": admin.id, "name": admin.name}
    assert set(mine) == set(live_got[other.id])  # the same envelope fields as a live push

    # From PostgreSQL (the buffer gone): the same envelope, and only it.
    _drop_buffer(app)
    from_db = _connect(app, client, away, "/feed", last_event_id=seen)
    assert _notifications(from_db, "/feed") == [mine]
    # Another user replaying the same span gets exactly its own, as it got it live.
    theirs = _connect(app, client, other, "/feed", last_event_id=seen)
    assert _notifications(theirs, "/feed") == [live_got[other.id]]
    # Nobody got the away user's, and the admin room got none.
    for sio in live.values():
        assert not [e for e in _received(sio, "/feed", timeout=0.3) if e[0] in PRIVATE]
    assert not [e for e in _received(admin_socket, "/admin", timeout=0.3) if e[0] in PRIVATE]


def test_a_user_appears_once_per_batch_event():
    """Two rows of one user in one claim make two events: an envelope id is never seen twice."""
    from app.realtime.emit import batch_envelope
    from app.services.notifications.push import Push, batch_events

    ada, bob = {"id": 1, "name": "Ada"}, {"id": 2, "name": "Bob"}
    pushes = [Push(7, {"id": 1, "title": "a"}, ada, "t1"), Push(8, {"id": 2, "title": "a"}, bob, "t1"),
              Push(7, {"id": 3, "title": "b"}, ada, "t2")]
    specs = batch_events("notification", pushes)
    assert [[uid for uid, _ in s["payload"]["_batch"]["users"]] for s in specs] == [[7, 8], [7]]
    rebuilt = [(uid, batch_envelope(99, "notification", s["payload"]["_batch"], own))
               for s in specs for uid, own in s["payload"]["_batch"]["users"]]
    assert [(uid, env["data"], env["actor"], env["timestamp"]) for uid, env in rebuilt] == [
        (p.user_id, p.data, p.actor, p.timestamp) for p in pushes]
