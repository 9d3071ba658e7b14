"""Socket.IO at unit level: socketio.test_client against the real handlers and database."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token

from app.extensions import db, socketio
from app.models import UserPresence
from tests.helpers import connect, wait_events, wait_for


def test_connect_refused_without_or_with_bad_token(app, client, viewer):
    sio = socketio.test_client(app, namespace="/feed", flask_test_client=client)
    assert not sio.is_connected("/feed")
    sio = socketio.test_client(app, namespace="/feed", flask_test_client=client,
                               auth={"token": "garbage"})
    assert not sio.is_connected("/feed")
    with app.app_context():
        expired = create_access_token(identity=viewer.id, expires_delta=timedelta(seconds=-1))
    sio = socketio.test_client(app, namespace="/feed", flask_test_client=client,
                               auth={"token": expired})
    assert not sio.is_connected("/feed")


def test_revoked_token_refused(app, client, viewer):
    client.post("/api/v1/auth/logout", headers=viewer.headers)
    assert not connect(app, client, viewer, "/feed").is_connected("/feed")


def test_admin_namespace_is_admins_only(app, client, viewer, admin):
    assert not connect(app, client, viewer, "/admin").is_connected("/admin")
    sio = connect(app, client, admin, "/admin")
    assert sio.is_connected("/admin")


def test_two_viewers_see_each_other_join(app, client, editor, viewer, episode):
    a = connect(app, client, editor, "/episodes")
    b = connect(app, client, viewer, "/episodes")
    ack = a.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    assert ack["ok"] and [v["id"] for v in ack["viewers"]] == [editor.id]
    ack = b.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    assert {v["id"] for v in ack["viewers"]} == {editor.id, viewer.id}
    joined = wait_events(a, "/episodes", "viewer_joined", count=2)
    assert viewer.id in [e["data"]["user"]["id"] for e in joined]
    # The REST read shows both viewers too.
    got = client.get(f"/api/v1/episodes/{episode['id']}", headers=viewer.headers).json
    assert {v["id"] for v in got["viewers"]} == {editor.id, viewer.id}
    b.emit("leave", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    left = wait_events(a, "/episodes", "viewer_left")
    assert left and left[0]["data"]["user"]["id"] == viewer.id
    # Ephemeral: no outbox row, so no event id (and never replayed).
    assert left[0]["id"] is None and joined[0]["id"] is None


def test_join_unknown_episode_is_refused(app, client, viewer):
    sio = connect(app, client, viewer, "/episodes")
    ack = sio.emit("join", {"episode_id": 999}, namespace="/episodes", callback=True)
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    ack = sio.emit("join", {"episode_id": "1"}, namespace="/episodes", callback=True)
    assert ack["ok"] is False


def test_rest_update_reaches_room_with_changed_fields(app, client, editor, viewer, episode):
    sio = connect(app, client, viewer, "/episodes")
    sio.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    sio.get_received("/episodes")
    client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers,
                 json={"title": "Pilot v2"})
    [update] = wait_events(sio, "/episodes", "episode_updated")
    assert set(update) == {"id", "event", "data", "actor", "timestamp"}
    assert update["event"] == "episode_updated"
    assert update["data"]["changed_fields"] == ["title"]
    assert update["data"]["title"] == "Pilot v2"
    assert update["actor"] == {"id": editor.id, "name": editor.name}


def test_episode_created_reaches_everyone_connected(app, client, editor, viewer):
    sio = connect(app, client, viewer, "/episodes")
    client.post("/api/v1/episodes", headers=editor.headers, json={"title": "New", "episode_number": 9})
    [created] = wait_events(sio, "/episodes", "episode_created")
    assert created["data"]["title"] == "New" and created["data"]["created_by"] == editor.id


def test_room_events_do_not_leak_to_other_rooms(app, client, editor, viewer, episode):
    other = client.post("/api/v1/episodes", headers=editor.headers,
                        json={"title": "Other", "episode_number": 2}).json
    sio = connect(app, client, viewer, "/episodes")
    sio.emit("join", {"episode_id": other["id"]}, namespace="/episodes", callback=True)
    client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers, json={"title": "X"})
    client.patch(f"/api/v1/episodes/{other['id']}", headers=editor.headers, json={"title": "Y"})
    updates = wait_events(sio, "/episodes", "episode_updated", count=2, timeout=1.5)
    assert [u["data"]["episode_id"] for u in updates] == [other["id"]]


def test_presence_online_status_and_offline(app, client, viewer, editor):
    watcher = connect(app, client, editor, "/feed")
    tab1 = connect(app, client, viewer, "/feed")
    tab2 = connect(app, client, viewer, "/feed")
    assert client.get("/api/v1/presence/me", headers=viewer.headers).json["status"] == "online"
    ack = tab1.emit("set_status", {"status": "busy", "message": "editing"}, namespace="/feed",
                    callback=True)
    assert ack["ok"] and ack["presence"]["status"] == "busy"
    changes = wait_events(watcher, "/feed", "presence_changed", count=2)
    assert any(c["data"]["user_id"] == viewer.id and c["data"]["status"] == "busy" for c in changes)
    tab1.disconnect(namespace="/feed")
    got = client.get(f"/api/v1/presence/users/{viewer.id}", headers=editor.headers).json
    assert got["status"] == "busy"  # still one tab open
    tab2.disconnect(namespace="/feed")
    got = client.get(f"/api/v1/presence/users/{viewer.id}", headers=editor.headers).json
    assert got["status"] == "offline"
    online = client.get("/api/v1/presence/online", headers=editor.headers).json["items"]
    assert [p["user_id"] for p in online] == [editor.id]


def test_put_presence_validates(client, viewer):
    r = client.put("/api/v1/presence/me", headers=viewer.headers, json={"status": "sleeping"})
    assert r.status_code == 422 and "status" in r.json["error"]["details"]
    r = client.put("/api/v1/presence/me", headers=viewer.headers,
                   json={"status": "away", "message": "lunch"})
    assert r.status_code == 200
    # Not connected: shown offline, but the choice is kept for the next connection.
    assert r.json["status"] == "offline"


def test_heartbeat_updates_last_activity(app, client, viewer, editor):
    from app.services import presence

    sio = connect(app, client, viewer, "/feed")
    before = client.get(f"/api/v1/presence/users/{viewer.id}",
                        headers=editor.headers).json["last_activity_at"]
    time.sleep(0.05)
    assert sio.emit("heartbeat", {}, namespace="/feed", callback=True) == {"ok": True}
    after = client.get(f"/api/v1/presence/users/{viewer.id}",
                       headers=editor.headers).json["last_activity_at"]
    assert after > before
    with app.app_context():
        # Heartbeats cost no transaction; the refresh round writes last activity in one go.
        assert presence.flush_activity() >= 1
        db.session.expire_all()
        stored = db.session.get(UserPresence, viewer.id).last_activity_at
        assert stored.isoformat().replace("+00:00", "Z")[:19] == after[:19]


def _expire(app, sids):
    """What happens to the sockets of a web process that died: nobody refreshes them."""
    from app.services.presence_store import get_store

    with app.app_context():
        assert get_store().touch(list(sids), expires_at=1.0, now=1.0) == []


def _sids(user_id, namespace):
    from app.realtime import connections

    return [c.sid for c in connections.all_connections()
            if c.user_id == user_id and c.namespace == namespace]


def test_expired_sockets_leave_and_go_offline(app, client, editor, viewer, episode):
    from app.realtime import connections
    from app.services import presence

    watcher = connect(app, client, editor, "/episodes")
    watcher.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    ghost = connect(app, client, viewer, "/episodes")
    ghost.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    wait_events(watcher, "/episodes", "viewer_joined", count=2)
    _expire(app, _sids(viewer.id, "/episodes"))
    with app.app_context():
        # The web process's refresh round pops what expired (beat's sweep does the same).
        ghosts = [c for c in connections.all_connections() if c.user_id == viewer.id]
        for c in ghosts:
            connections.remove(c.sid)  # the process that held them is gone
        round_ = presence.refresh_and_expire(connections.all_connections(), reconnect=None)
        assert round_["expired"] == 1
        assert presence.sweep_expired() == 0  # popped once only
    [left] = wait_events(watcher, "/episodes", "viewer_left")
    assert left["data"]["user"]["id"] == viewer.id
    assert client.get(f"/api/v1/presence/users/{viewer.id}",
                      headers=editor.headers).json["status"] == "offline"
    assert [v["id"] for v in client.get(f"/api/v1/episodes/{episode['id']}",
                                        headers=editor.headers).json["viewers"]] == [editor.id]


def test_live_socket_lost_by_the_store_is_registered_again(app, client, editor, episode):
    from app.realtime import connections
    from app.services import presence

    sio = connect(app, client, editor, "/episodes")
    sio.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    with app.app_context():
        presence.get_store().disconnect(_sids(editor.id, "/episodes"))  # e.g. expired in a stall
        assert presence.viewers_of("episode", episode["id"]) == []
        round_ = presence.refresh_and_expire(connections.all_connections(),
                                             reconnect=connections.reregister)
        assert round_["reregistered"] == 1
        assert [v["id"] for v in presence.viewers_of("episode", episode["id"])] == [editor.id]


def test_reconnect_with_last_event_id_replays_in_order(app, client, editor, viewer, episode):
    first = connect(app, client, viewer, "/episodes")
    first.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers, json={"title": "A"})
    [seen] = wait_events(first, "/episodes", "episode_updated")
    first.disconnect(namespace="/episodes")
    for title in ("B", "C"):
        client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers, json={"title": title})
    client.post("/api/v1/episodes", headers=editor.headers, json={"title": "Next", "episode_number": 5})
    again = connect(app, client, viewer, "/episodes", last_event_id=seen["id"])
    updates = wait_events(again, "/episodes", "episode_updated", count=2)
    assert [u["data"]["title"] for u in updates] == ["B", "C"]
    assert updates[0]["id"] < updates[1]["id"]
    assert wait_events(again, "/episodes", "episode_created")[0]["data"]["title"] == "Next"
    # And live events follow.
    client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers, json={"title": "D"})
    again.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers, json={"title": "E"})
    titles = [u["data"]["title"] for u in wait_events(again, "/episodes", "episode_updated")]
    assert "E" in titles


def test_connection_cap_refuses_the_next_one(app, client, viewer):
    app.config["MAX_CONNECTIONS"] = 2
    clients = [connect(app, client, viewer, "/feed") for _ in range(3)]
    assert [c.is_connected("/feed") for c in clients] == [True, True, False]


def test_realtime_stats_disconnect_and_broadcast(app, client, admin, viewer):
    sio = connect(app, client, viewer, "/feed")
    assert client.get("/api/v1/realtime/stats", headers=viewer.headers).status_code == 403
    stats = client.get("/api/v1/realtime/stats", headers=admin.headers).json
    assert stats["connections_by_namespace"] == {"/feed": 1} and stats["users_online"] == 1
    r = client.post("/api/v1/realtime/broadcast", headers=admin.headers,
                    json={"namespace": "/feed", "event": "maintenance", "data": {"in": 5}})
    assert r.status_code == 202
    [msg] = wait_events(sio, "/feed", "maintenance")
    assert msg["data"] == {"in": 5} and msg["actor"]["id"] == admin.id
    bad = client.post("/api/v1/realtime/broadcast", headers=admin.headers,
                      json={"namespace": "/nowhere", "event": "x"})
    assert bad.status_code == 422 and "namespace" in bad.json["error"]["details"]
    [sid] = _sids(viewer.id, "/feed")
    assert client.delete("/api/v1/realtime/connections/nope", headers=admin.headers).status_code == 404
    assert client.delete(f"/api/v1/realtime/connections/{sid}", headers=admin.headers).status_code == 204
    wait_for(lambda: not sio.is_connected("/feed"), 5, what="the connection closed")
    assert not sio.is_connected("/feed")
    assert client.get(f"/api/v1/presence/users/{viewer.id}",
                      headers=admin.headers).json["status"] == "offline"


@pytest.mark.parametrize("namespace", ["/feed", "/episodes", "/jobs", "/admin"])
def test_every_namespace_requires_a_token(app, client, namespace):
    sio = socketio.test_client(app, namespace=namespace, flask_test_client=client, auth={})
    assert not sio.is_connected(namespace)


def test_shutdown_removes_all_its_sockets_in_one_go(app, client, editor, viewer, episode):
    from app.realtime import connections
    from app.services import presence

    watcher = connect(app, client, editor, "/episodes")
    watcher.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    for _ in range(2):
        tab = connect(app, client, viewer, "/episodes")
        tab.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    wait_events(watcher, "/episodes", "viewer_joined", count=2)
    other = connect(app, client, editor, "/episodes")  # the editor's second tab stays
    other.emit("join", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    with app.app_context():
        keep = _sids(editor.id, "/episodes")[-1]
        sids = [c.sid for c in connections.all_connections() if c.sid != keep]
        assert presence.sockets_gone(sids) == 3
        assert presence.stats()["connections"] == 1
    left = wait_events(other, "/episodes", "viewer_left", count=2, timeout=1.5)
    # One viewer_left per user (aggregated over the user's sockets), not one per socket;
    # the editor still views the episode from the other tab.
    assert [e["data"]["user"]["id"] for e in left] == [viewer.id]
    assert client.get(f"/api/v1/presence/users/{viewer.id}",
                      headers=editor.headers).json["status"] == "offline"
    assert client.get(f"/api/v1/presence/users/{editor.id}",
                      headers=editor.headers).json["status"] == "online"


def test_an_event_for_two_rooms_reaches_a_socket_in_both_once(app, client, editor, episode):
    """A job event goes to the job's room and its episode's room as one emit: a client
    subscribed to both gets it once, a client in either one gets it too."""
    from app.realtime.emit import JOBS, emit_to, envelope, episode_room, job_room

    job = client.post("/api/v1/jobs", headers=editor.headers,
                      json={"type": "noop", "episode_id": episode["id"]}).json
    both = connect(app, client, editor, "/jobs")
    only_job = connect(app, client, editor, "/jobs")
    for sio, subscriptions in ((both, [{"job_id": job["id"]}, {"episode_id": episode["id"]}]),
                               (only_job, [{"job_id": job["id"]}])):
        for data in subscriptions:
            assert sio.emit("subscribe", data, namespace="/jobs", callback=True)["ok"]
        sio.get_received("/jobs")
    with app.app_context():
        emit_to([(JOBS, job_room(job["id"])), (JOBS, episode_room(episode["id"]))], "job_progress",
                envelope("job_progress", {"job_id": job["id"], "progress": 50}, event_id=None,
                         actor=None))
    assert len(wait_events(both, "/jobs", "job_progress", count=2, timeout=1.5)) == 1
    assert len(wait_events(only_job, "/jobs", "job_progress", count=1)) == 1
