"""End to end: real web processes (eventlet, ``python wsgi.py``), a real Celery worker on the
Redis broker, and python-socketio clients over the wire."""
from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
import requests
import socketio as sio_client
from flask_jwt_extended import create_access_token

from tests.helpers import SocketClient as Client
from tests.helpers import refused as _refused
from tests.processes import web_server

pytestmark = pytest.mark.redis


def test_connect_refused_without_token_expired_token_and_viewer_on_admin(app, server, viewer):
    assert _refused(server.url, "/feed", None)
    with app.app_context():
        expired = create_access_token(identity=viewer.id, expires_delta=timedelta(seconds=-1))
    assert _refused(server.url, "/feed", {"token": expired})
    assert _refused(server.url, "/admin", {"token": viewer.token})
    assert not _refused(server.url, "/feed", {"token": viewer.token})


def test_viewers_and_rest_update_reach_the_room(app, server, worker, editor, viewer):
    ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                       json={"title": "Live", "episode_number": 1}, timeout=10).json()
    a = Client(server.url, editor.token, ["/episodes"])
    b = Client(server.url, viewer.token, ["/episodes"])
    try:
        assert a.call("join", {"episode_id": ep["id"]}, "/episodes")["ok"]
        ack = b.call("join", {"episode_id": ep["id"]}, "/episodes")
        assert {v["id"] for v in ack["viewers"]} == {editor.id, viewer.id}
        a.wait("viewer_joined", where=lambda e: e["data"]["user"]["id"] == viewer.id)
        b.wait("viewer_joined", where=lambda e: e["data"]["user"]["id"] == viewer.id)
        r = requests.patch(f"{server.url}/api/v1/episodes/{ep['id']}", headers=editor.headers,
                           json={"title": "Live!", "season": 3}, timeout=10)
        assert r.status_code == 200
        for client in (a, b):
            [update] = client.wait("episode_updated")
            assert update["data"]["changed_fields"] == ["season", "title"]
            assert update["data"]["changes"]["title"] == {"before": "Live", "after": "Live!"}
    finally:
        a.close()
        b.close()


def test_job_event_from_worker_process_reaches_client(app, server, worker, editor):
    ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                       json={"title": "Jobs", "episode_number": 2}, timeout=10).json()
    c = Client(server.url, editor.token, ["/jobs"])
    try:
        assert c.call("subscribe", {"episode_id": ep["id"]}, "/jobs")["ok"]
        job = requests.post(f"{server.url}/api/v1/jobs", headers=editor.headers,
                            json={"type": "noop", "episode_id": ep["id"]}, timeout=10).json()
        [created] = c.wait("job_created")
        assert created["data"]["job_id"] == job["id"] and created["data"]["type"] == "noop"
        # Delivered (and emitted) by the worker process, not the web process.
        assert "workers.events.deliver" in worker.output()
    finally:
        c.close()


def test_two_web_processes_share_one_redis(app, server, worker, admin, viewer):
    with web_server(async_mode="eventlet") as other:
        a = Client(server.url, viewer.token, ["/feed"])
        b = Client(other.url, viewer.token, ["/feed"])
        try:
            r = requests.post(f"{other.url}/api/v1/realtime/broadcast", headers=admin.headers,
                              json={"namespace": "/feed", "event": "announcement",
                                    "data": {"text": "hello"}}, timeout=10)
            assert r.status_code == 202
            for client in (a, b):
                [msg] = client.wait("announcement")
                assert msg["data"] == {"text": "hello"} and msg["id"] == r.json()["id"]
            stats = requests.get(f"{server.url}/api/v1/realtime/stats", headers=admin.headers,
                                 timeout=10).json()
            assert stats["connections_by_namespace"]["/feed"] == 2  # across both processes
        finally:
            a.close()
            b.close()


def test_reconnect_with_last_event_id_replays_missed_events(app, server, worker, editor, viewer):
    ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                       json={"title": "R0", "episode_number": 3}, timeout=10).json()
    c = Client(server.url, viewer.token, ["/episodes"])
    c.call("join", {"episode_id": ep["id"]}, "/episodes")
    requests.patch(f"{server.url}/api/v1/episodes/{ep['id']}", headers=editor.headers,
                   json={"title": "R1"}, timeout=10)
    [seen] = c.wait("episode_updated")
    c.close()
    for title in ("R2", "R3"):
        requests.patch(f"{server.url}/api/v1/episodes/{ep['id']}", headers=editor.headers,
                       json={"title": title}, timeout=10)
    # Let the worker deliver them while the client is away.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        hist = requests.get(f"{server.url}/api/v1/activity/episode/{ep['id']}",
                            headers=editor.headers, timeout=10).json()["items"]
        if len(hist) >= 4:
            break
        time.sleep(0.1)
    again = Client(server.url, viewer.token, ["/episodes"], last_event_id=seen["id"])
    try:
        missed = again.wait("episode_updated", count=2)
        assert [m["data"]["title"] for m in missed] == ["R2", "R3"]
        assert seen["id"] < missed[0]["id"] < missed[1]["id"]
        again.call("join", {"episode_id": ep["id"]}, "/episodes")
        requests.patch(f"{server.url}/api/v1/episodes/{ep['id']}", headers=editor.headers,
                       json={"title": "R4"}, timeout=10)
        live = again.wait("episode_updated", count=3)
        assert [m["data"]["title"] for m in live] == ["R2", "R3", "R4"]
    finally:
        again.close()


def test_graceful_shutdown_disconnects_clients_and_marks_them_offline(app, worker, viewer):
    from app.services import presence

    with web_server(async_mode="eventlet") as doomed:
        c = Client(doomed.url, viewer.token, ["/feed"])
        disconnected = []
        c.sio.on("disconnect", lambda *a: disconnected.append(True), namespace="/feed")
        with app.app_context():
            assert presence.get_presence(viewer.id)["status"] == "online"
        os.killpg(doomed.proc.pid, signal.SIGTERM)
        doomed.proc.wait(15)
        deadline = time.monotonic() + 10
        while not disconnected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert disconnected
    with app.app_context():
        assert presence.get_presence(viewer.id)["status"] == "offline"


def test_production_server_streams_large_bodies_and_long_polling(server, editor):
    """The eventlet server runs with 1 KB socket buffers (app/server.py): request and response
    bodies far larger than that, and the polling transport, still go through intact."""
    headers = {"Authorization": f"Bearer {editor.token}"}
    api = f"{server.url}/api/v1"
    episode = requests.post(f"{api}/episodes", headers=headers, timeout=10,
                            json={"title": "Big bodies", "episode_number": 1}).json()
    data = os.urandom(300_000)
    r = requests.post(f"{api}/episodes/{episode['id']}/files", headers=headers, timeout=30,
                      files={"file": ("big.bin", data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    url = requests.get(f"{api}/files/{r.json()['id']}/download-url", headers=headers,
                       timeout=10).json()["url"]
    got = requests.get(url if url.startswith("http") else server.url + url, timeout=30)
    assert got.status_code == 200 and got.content == data
    description = "x" * 20_000  # a large JSON request and response (the longest allowed)
    r = requests.patch(f"{api}/episodes/{episode['id']}", headers=headers, timeout=10,
                       json={"description": description})
    assert r.status_code == 200 and r.json()["description"] == description
    polling = sio_client.Client(reconnection=False)
    polling.connect(server.url, namespaces=["/episodes"], auth={"token": editor.token},
                    transports=["polling"], wait_timeout=10)
    try:
        ack = polling.call("join", {"episode_id": episode["id"]}, namespace="/episodes", timeout=10)
        assert ack["ok"] is True
    finally:
        polling.disconnect()


def test_idle_clients_are_pinged_and_stay_connected(viewer):
    """The eventlet server schedules Engine.IO pings on its hub (app/server.py): an idle
    client keeps getting them, so it outlives many ping intervals (without pings, the
    python-socketio client gives up after interval + timeout)."""
    with web_server(async_mode="eventlet", SOCKETIO_PING_INTERVAL="1",
                    SOCKETIO_PING_TIMEOUT="1") as s:
        c = Client(s.url, viewer.token, ["/feed"])
        lost = []
        c.sio.on("disconnect", lambda *a: lost.append(True), namespace="/feed")
        try:
            time.sleep(5)  # a client that hears no ping for interval + timeout gives up
            assert c.sio.connected and not lost
        finally:
            c.close()
