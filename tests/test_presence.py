"""Presence at unit level (socketio.test_client): coalesced viewer events, big rooms,
invisible users, the per-user socket cap and per-connection event rate limits.

Runs on the memory store (SQLite pass) and on the Redis store (PostgreSQL + Redis pass).
"""
from __future__ import annotations

import time

from tests.helpers import connect, wait_events


def _join(sio, episode_id):
    return sio.emit("join", {"episode_id": episode_id}, namespace="/episodes", callback=True)


def _received(sio, namespace, *, settle=0.6):
    """Everything received until nothing new came for ``settle`` seconds (bounded)."""
    got, quiet_since, deadline = [], time.monotonic(), time.monotonic() + 10
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        new = sio.get_received(namespace)
        if new:
            got += new
            quiet_since = time.monotonic()
        time.sleep(0.05)
    return got


def test_joins_and_leaves_in_a_window_are_coalesced(app, client, factory, editor, episode):
    app.config["VIEWER_COALESCE_MS"] = 400
    watcher = connect(app, client, editor, "/episodes")
    _join(watcher, episode["id"])
    _received(watcher, "/episodes")
    users = [factory.user("viewer") for _ in range(4)]
    tabs = [connect(app, client, u, "/episodes") for u in users for _ in range(2)]
    for tab in tabs:  # eight sockets of four users join within one window
        assert _join(tab, episode["id"])["ok"]
    # One of them comes and goes within the window: the others never hear of them.
    passer = factory.user("viewer")
    drive_by = connect(app, client, passer, "/episodes")
    _join(drive_by, episode["id"])
    drive_by.emit("leave", {"episode_id": episode["id"]}, namespace="/episodes", callback=True)
    events = _received(watcher, "/episodes")
    joined = [e["args"][0]["data"]["user"]["id"] for e in events if e["name"] == "viewer_joined"]
    assert sorted(joined) == sorted(u.id for u in users)  # once per user, not per socket
    assert not [e for e in events if e["name"] == "viewer_left"]
    assert passer.id not in joined


def data_ids(data):
    return [v["id"] for v in data["viewers"]]


def test_big_room_gets_count_and_first_page_instead_of_per_join_events(app, client, factory, editor,
                                                                        episode):
    app.config.update(VIEWERS_BIG_ROOM=3, VIEWERS_PAGE_SIZE=2, VIEWER_COALESCE_MS=300,
                      VIEWERS_BIG_ROOM_INTERVAL_MS=0)
    watcher = connect(app, client, editor, "/episodes")
    _join(watcher, episode["id"])
    _received(watcher, "/episodes")
    users = [factory.user("viewer") for _ in range(5)]
    tabs = [connect(app, client, u, "/episodes") for u in users]
    for tab in tabs:
        _join(tab, episode["id"])
    events = _received(watcher, "/episodes")
    assert not [e for e in events if e["name"] == "viewer_joined"]
    [changed] = [e["args"][0] for e in events if e["name"] == "viewers_changed"]
    assert changed["id"] is None and changed["event"] == "viewers_changed"
    data = changed["data"]
    assert data["episode_id"] == episode["id"] and data["count"] == 6
    assert [v["id"] for v in data["viewers"]] == sorted([editor.id] + [u.id for u in users])[:2]
    assert data["joins_count"] == 5 and len(data["joins"]) == 2 and data["leaves_count"] == 0
    # The join ack carries the count and the first page; the REST read up to 200.
    ack = _join(connect(app, client, factory.user("viewer"), "/episodes"), episode["id"])
    assert ack["viewer_count"] == 7 and [v["id"] for v in ack["viewers"]] == data_ids(data)
    assert len(client.get(f"/api/v1/episodes/{episode['id']}",
                          headers=editor.headers).json["viewers"]) == 7
    # Leaves in a big room: one message again, with the new count.
    for tab in tabs[:2]:
        tab.disconnect(namespace="/episodes")
    events = _received(watcher, "/episodes")
    [changed] = [e["args"][0]["data"] for e in events if e["name"] == "viewers_changed"]
    assert changed["count"] == 5 and changed["leaves_count"] == 2
    assert sorted(v["id"] for v in changed["leaves"]) == sorted(u.id for u in users[:2])


def test_invisible_users_are_hidden_from_viewers_and_presence(app, client, editor, viewer, episode):
    app.config["VIEWER_COALESCE_MS"] = 50
    watcher = connect(app, client, editor, "/episodes")
    feed_watcher = connect(app, client, editor, "/feed")
    _join(watcher, episode["id"])
    _received(watcher, "/episodes")
    # Invisible before connecting: never seen at all.
    r = client.put("/api/v1/presence/me", headers=viewer.headers, json={"status": "offline"})
    assert r.status_code == 200
    feed = connect(app, client, viewer, "/feed")
    tab = connect(app, client, viewer, "/episodes")
    ack = _join(tab, episode["id"])
    assert [v["id"] for v in ack["viewers"]] == [editor.id] and ack["viewer_count"] == 1
    assert feed.emit("heartbeat", {}, namespace="/feed", callback=True) == {"ok": True}
    events = _received(watcher, "/episodes") + _received(feed_watcher, "/feed")
    assert not [e for e in events if e["name"] in ("viewer_joined", "presence_changed")
                and viewer.id in (e["args"][0]["data"].get("user", {}).get("id"),
                                  e["args"][0]["data"].get("user_id"))]
    seen = client.get(f"/api/v1/presence/users/{viewer.id}", headers=editor.headers).json
    assert seen["status"] == "offline" and seen["last_activity_at"] is None
    assert seen["viewing"] == [] and seen["message"] is None
    assert [v["id"] for v in client.get(f"/api/v1/episodes/{episode['id']}",
                                        headers=editor.headers).json["viewers"]] == [editor.id]
    assert [v["id"] for v in client.get(f"/api/v1/presence/episode/{episode['id']}/viewers",
                                        headers=editor.headers).json["items"]] == [editor.id]
    online = client.get("/api/v1/presence/online", headers=editor.headers).json["items"]
    assert [p["user_id"] for p in online] == [editor.id]
    stats = client.get("/api/v1/presence/stats", headers=editor.headers).json
    assert stats["users_online"] == 1 and stats["by_status"]["online"] == 1
    # The user themself still sees what they do.
    mine = client.get("/api/v1/presence/me", headers=viewer.headers).json
    assert mine["viewing"] == [{"resource_type": "episode", "resource_id": episode["id"]}]
    # Becoming visible: others see them join and come online...
    ack = feed.emit("set_status", {"status": "busy"}, namespace="/feed", callback=True)
    assert ack["ok"] and ack["presence"]["status"] == "busy"
    [joined] = wait_events(watcher, "/episodes", "viewer_joined")
    assert joined["data"]["user"]["id"] == viewer.id
    changes = wait_events(feed_watcher, "/feed", "presence_changed")
    assert changes[-1]["data"]["user_id"] == viewer.id and changes[-1]["data"]["status"] == "busy"
    # ...and going invisible again looks like leaving and going offline.
    client.put("/api/v1/presence/me", headers=viewer.headers, json={"status": "offline"})
    [left] = wait_events(watcher, "/episodes", "viewer_left")
    assert left["data"]["user"]["id"] == viewer.id
    changes = wait_events(feed_watcher, "/feed", "presence_changed")
    assert changes[-1]["data"] == {"user_id": viewer.id, "name": viewer.name, "status": "offline",
                                   "message": None, "last_activity_at": None}
    assert client.get(f"/api/v1/episodes/{episode['id']}",
                      headers=editor.headers).json["viewers"] == [{"id": editor.id,
                                                                   "name": editor.name}]


def test_per_user_socket_cap_is_refused_with_its_code(app, client, viewer, editor):
    app.config["MAX_SOCKETS_PER_USER"] = 2
    tabs = [connect(app, client, viewer, "/feed") for _ in range(2)]
    assert all(t.is_connected("/feed") for t in tabs)
    refused = connect(app, client, viewer, "/feed")
    assert not refused.is_connected("/feed")
    with app.app_context():
        from app.services.presence_store import get_store

        mine = get_store().sockets_of(viewer.id)
        assert [s["namespace"] for s in mine] == ["/feed", "/feed"]
        assert {s["user_id"] for s in mine} == {viewer.id}
    # Another user is not affected (the cap is per user, not per address).
    assert connect(app, client, editor, "/feed").is_connected("/feed")
    tabs[0].disconnect(namespace="/feed")
    assert connect(app, client, viewer, "/feed").is_connected("/feed")


def test_event_rate_limits_per_connection(app, client, viewer, episode):
    app.config["SOCKET_EVENT_LIMITS"] = "join=3/0.01,heartbeat=2/0.01,set_status=1/0.01,subscribe=2/0.01"
    tab = connect(app, client, viewer, "/episodes")
    acks = [_join(tab, episode["id"]) for _ in range(4)]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[-1]["error"]["code"] == "rate_limited"
    assert acks[-1]["error"]["details"]["event"] == "join"
    assert acks[-1]["error"]["details"]["retry_after"] > 0
    # Per connection: another tab of the same user has its own bucket.
    assert _join(connect(app, client, viewer, "/episodes"), episode["id"])["ok"]
    feed = connect(app, client, viewer, "/feed")
    beats = [feed.emit("heartbeat", {}, namespace="/feed", callback=True) for _ in range(3)]
    assert [b["ok"] for b in beats] == [True, True, False]
    assert beats[-1]["error"]["code"] == "rate_limited"
    statuses = [feed.emit("set_status", {"status": "away"}, namespace="/feed", callback=True)
                for _ in range(2)]
    assert statuses[0]["ok"] and statuses[1]["error"]["code"] == "rate_limited"
    jobs = connect(app, client, viewer, "/jobs")
    subs = [jobs.emit("subscribe", {"episode_id": episode["id"]}, namespace="/jobs", callback=True)
            for _ in range(3)]
    assert [s["ok"] for s in subs] == [True, True, False]
    assert subs[-1]["error"]["code"] == "rate_limited"


def test_join_that_cannot_be_served_gets_an_error_ack(app, client, viewer, episode):
    """The presence store unreachable (a Redis on a port nobody listens on): the join is
    answered with an error ack, not a traceback, and the socket stays usable."""
    import redis

    from app.services.presence_store import RedisPresenceStore
    from tests.processes import free_port

    tab = connect(app, client, viewer, "/episodes")
    working = app.extensions["presence_store"]
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, decode_responses=True)
    app.extensions["presence_store"] = RedisPresenceStore(dead)
    try:
        ack = _join(tab, episode["id"])
    finally:
        app.extensions["presence_store"] = working
    assert ack == {"ok": False, "error": {"code": "unavailable", "message": "Try again shortly",
                                          "details": {}}}
    assert _join(tab, episode["id"])["ok"]


def test_openapi_description_documents_the_presence_events(client):
    info = client.get("/api/v1/openapi.json").json["info"]
    for name in ("viewers_changed", "VIEWERS_BIG_ROOM", "too_many_user_connections",
                 "rate_limited", "Invisible users"):
        assert name in info["description"]


def test_a_socket_the_server_no_longer_holds_is_dropped_by_the_refresh(app, client, viewer):
    """A client gone while its connect handler ran gets no disconnect call: the refresh
    round drops its registry entry and its presence instead of refreshing it for ever."""
    from datetime import timedelta

    from app.realtime import connections
    from app.services import presence

    live = connect(app, client, viewer, "/feed")
    assert live.is_connected("/feed")
    with app.app_context():
        ghost = connections.add("ghost-sid", viewer.id, "/feed", cap=100, name=viewer.name)
        ghost.connected_at -= timedelta(minutes=5)
        assert presence.socket_connected(sid="ghost-sid", user_id=viewer.id, name=viewer.name,
                                         namespace="/feed", server_id=connections.SERVER_ID)
        assert presence.stats()["connections"] == 2
        kept = connections.live_connections()
        assert "ghost-sid" not in {c.sid for c in kept} and connections.get("ghost-sid") is None
        assert presence.stats()["connections"] == 1


def test_a_big_room_hears_viewers_changed_at_most_once_per_interval(app, client, factory, editor,
                                                                   episode):
    """Each viewers_changed reaches every socket of the room: joins that keep coming are
    held and merged into the next one, one interval later, never lost."""
    app.config.update(VIEWERS_BIG_ROOM=1, VIEWER_COALESCE_MS=50, VIEWERS_BIG_ROOM_INTERVAL_MS=4000)
    watcher = connect(app, client, editor, "/episodes")
    _join(watcher, episode["id"])
    _join(connect(app, client, factory.user("viewer"), "/episodes"), episode["id"])
    [first] = wait_events(watcher, "/episodes", "viewers_changed")
    assert first["data"]["count"] == 2
    late = [factory.user("viewer") for _ in range(3)]
    for user in late:  # three more windows' worth of joins within the interval
        _join(connect(app, client, user, "/episodes"), episode["id"])
        time.sleep(0.1)
    [merged] = wait_events(watcher, "/episodes", "viewers_changed", timeout=10)
    assert merged["data"]["count"] == 5  # one message for the three windows
    assert sorted(v["id"] for v in merged["data"]["joins"]) == sorted(u.id for u in late)


def test_a_join_that_waits_too_long_for_an_io_slot_gets_unavailable(app, client, viewer, episode):
    """Admission control: with every I/O slot taken (a storm), a join waits at most
    SOCKET_IO_WAIT_SECONDS, then gets a clear ack; once a slot frees, joins work."""
    from app.realtime.namespaces import io_slot

    tab = connect(app, client, viewer, "/episodes")
    app.config.update(SOCKET_IO_CONCURRENCY=1, SOCKET_IO_WAIT_SECONDS=0.2)
    with app.app_context(), io_slot():  # the only slot, held as a stalled handler would
        ack = _join(tab, episode["id"])
    assert ack["ok"] is False and ack["error"]["code"] == "unavailable"
    assert _join(tab, episode["id"])["ok"]
