"""End to end presence (issue 12): real ``python wsgi.py`` processes (eventlet), a real Celery
worker, python-socketio clients over the wire, the test run's PostgreSQL and Redis."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest
import requests
import socketio as sio_client

from tests.helpers import SocketClient as Client
from tests.helpers import wait_for
from tests.processes import web_server

pytestmark = pytest.mark.redis

STORM_CLIENTS = 300
STORM_USERS = 30


def _log_problems(text: str) -> list[str]:
    bad = ("Traceback", "ERROR", "QueuePool", "Deadlock", "Exception")
    return [line for line in text.splitlines() if any(b in line for b in bad)]


async def _storm(url: str, tokens: list[str], episode_id: int, editor_headers: dict) -> dict:
    """Connect every client (50 connects in flight), then send every join at once, then one
    REST update: every ack and every client's ``episode_updated``."""
    slots = asyncio.Semaphore(50)
    updated = [asyncio.Event() for _ in range(STORM_CLIENTS)]
    clients: list[sio_client.AsyncClient] = []

    async def make(i: int) -> sio_client.AsyncClient:
        client = sio_client.AsyncClient(reconnection=False)

        async def on_update(data, i=i):
            updated[i].set()

        client.on("episode_updated", on_update, namespace="/episodes")
        async with slots:
            await client.connect(url, namespaces=["/episodes"], transports=["websocket"],
                                 auth={"token": tokens[i % len(tokens)]}, wait_timeout=60)
        return client

    try:
        clients = list(await asyncio.gather(*(make(i) for i in range(STORM_CLIENTS))))
        acks = await asyncio.gather(*(
            c.call("join", {"episode_id": episode_id}, namespace="/episodes", timeout=90)
            for c in clients))
        response = await asyncio.to_thread(
            requests.patch, f"{url}/api/v1/episodes/{episode_id}", headers=editor_headers,
            json={"title": "After the storm"}, timeout=30)
        assert response.status_code == 200
        done, _ = await asyncio.wait([asyncio.create_task(e.wait()) for e in updated], timeout=90)
        return {"acks": acks, "updated": sum(e.is_set() for e in updated)}
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


def test_300_clients_join_one_room_at_once(app, worker, factory, editor):
    users = [factory.user("viewer") for _ in range(STORM_USERS)]
    with web_server(async_mode="eventlet") as server:
        ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                           json={"title": "Storm", "episode_number": 12}, timeout=10).json()
        got = asyncio.run(_storm(server.url, [u.token for u in users], ep["id"], editor.headers))
        assert [a for a in got["acks"] if not a.get("ok")] == []
        assert {a["viewer_count"] for a in got["acks"]} <= set(range(1, STORM_USERS + 1))
        assert got["updated"] == STORM_CLIENTS
        def nobody_left() -> bool:
            got = requests.get(f"{server.url}/api/v1/episodes/{ep['id']}",
                               headers=editor.headers, timeout=10)
            assert got.status_code == 200, (got.status_code, got.text)
            return got.json()["viewers"] == []

        wait_for(nobody_left, 20, 0.1, "all gone again")
        log = server.output()
    assert _log_problems(log) == []


def test_killed_web_process_leaves_presence_within_the_ttl(app, worker, editor, viewer):
    short = {"PRESENCE_STALE_SECONDS": "2"}
    with web_server(async_mode="eventlet", **short) as live:
        ep = requests.post(f"{live.url}/api/v1/episodes", headers=editor.headers,
                           json={"title": "Ghosts", "episode_number": 13}, timeout=10).json()
        watcher = Client(live.url, editor.token, ["/episodes", "/feed"])
        try:
            assert watcher.call("join", {"episode_id": ep["id"]}, "/episodes")["ok"]
            with web_server(async_mode="eventlet", **short) as doomed:
                ghost = Client(doomed.url, viewer.token, ["/episodes", "/feed"])
                assert ghost.call("join", {"episode_id": ep["id"]}, "/episodes")["ok"]
                watcher.wait("viewer_joined", where=lambda e: e["data"]["user"]["id"] == viewer.id)
                os.killpg(doomed.proc.pid, signal.SIGKILL)  # no goodbye of any kind
                doomed.proc.wait(10)
            # The surviving process pops the expired sockets and tells the room.
            [left] = watcher.wait("viewer_left", timeout=30,
                                  where=lambda e: e["data"]["user"]["id"] == viewer.id)
            assert left["data"]["episode_id"] == ep["id"] and left["id"] is None
            offline = watcher.wait("presence_changed", timeout=30,
                                   where=lambda e: e["data"]["user_id"] == viewer.id
                                   and e["data"]["status"] == "offline")
            assert offline
            viewers = requests.get(f"{live.url}/api/v1/presence/episode/{ep['id']}/viewers",
                                   headers=editor.headers, timeout=10).json()["items"]
            assert [v["id"] for v in viewers] == [editor.id]
            them = requests.get(f"{live.url}/api/v1/presence/users/{viewer.id}",
                                headers=editor.headers, timeout=10).json()
            assert them["status"] == "offline" and them["viewing"] == []
            stats = requests.get(f"{live.url}/api/v1/presence/stats", headers=editor.headers,
                                 timeout=10).json()
            assert stats["connections_by_namespace"] == {"/episodes": 1, "/feed": 1}
        finally:
            watcher.close()


def _refusal(url: str, namespace: str, token: str) -> dict | None:
    """The connect_error data of a refused connection; None when it connected."""
    client = sio_client.Client(reconnection=False)
    errors: list = []
    client.on("connect_error", lambda data: errors.append(data), namespace=namespace)
    try:
        client.connect(url, namespaces=[namespace], auth={"token": token},
                       transports=["websocket"], wait_timeout=5)
    except sio_client.exceptions.ConnectionError:
        return errors[0] if errors else {"data": {}}
    client.disconnect()
    return None


def test_user_socket_cap_and_event_rate_limits_answer_with_their_codes(app, editor, viewer):
    limits = {"MAX_SOCKETS_PER_USER": "2",
              "SOCKET_EVENT_LIMITS": "join=2/0.01,subscribe=1/0.01,set_status=1/0.01,heartbeat=1/0.01"}
    with web_server(async_mode="eventlet", **limits) as server:
        ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                           json={"title": "Caps", "episode_number": 14}, timeout=10).json()
        tab = Client(server.url, viewer.token, ["/episodes", "/feed"])  # two sockets
        try:
            refused = _refusal(server.url, "/jobs", viewer.token)
            assert refused is not None
            assert refused["data"]["code"] == "too_many_user_connections"
            assert _refusal(server.url, "/jobs", editor.token) is None  # per user, not per IP
            acks = [tab.call("join", {"episode_id": ep["id"]}, "/episodes") for _ in range(3)]
            assert [a["ok"] for a in acks] == [True, True, False]
            assert acks[2]["error"]["code"] == "rate_limited"
            assert acks[2]["error"]["details"]["event"] == "join"
            beats = [tab.call("heartbeat", {}, "/feed") for _ in range(2)]
            assert beats[0] == {"ok": True} and beats[1]["error"]["code"] == "rate_limited"
            status = [tab.call("set_status", {"status": "away"}, "/feed") for _ in range(2)]
            assert status[0]["ok"] and status[1]["error"]["code"] == "rate_limited"
        finally:
            tab.close()
        # The socket slots come back when the user's sockets go.
        wait_for(lambda: _refusal(server.url, "/jobs", viewer.token) is None, 20, 0.1,
                 "the viewer admitted again")
        assert _log_problems(server.output()) == []
