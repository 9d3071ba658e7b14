"""deploy/'s cluster on this machine (issue 16 item 5): nginx with the shipped site in front of
two ``python wsgi.py``, the Procfile's workers on their queues, beat, the run's PostgreSQL
and Redis (tests/cluster.py). Clients on either web process get every event; one process
killed, its clients reconnect through nginx to the other and replay what they missed;
presence follows."""
from __future__ import annotations

import os
import re
import shlex
import signal
import threading
import time

import pytest
import requests
import socketio as sio_client

from app.tasks import EVENTS, JOBS, MAINTENANCE, NOTIFICATIONS
from tests.cluster import DEPLOY, SITE, cluster, nginx_binary, procfile, procfile_worker_queues

needs_nginx = pytest.mark.skipif(
    nginx_binary() is None and not os.environ.get("EC_REQUIRE_NGINX"),
    reason="needs nginx (apt-get install -y nginx); EC_REQUIRE_NGINX=1 makes its absence a failure")


def _eventually(predicate, timeout: float = 30) -> bool:
    """Bounded polling for a condition (no timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


class ClusterClient:
    """A python-socketio client, as a browser tab would be: it reconnects by itself with the
    last event id it saw and joins its episode again on every connect. ``transport`` is
    "websocket", "polling", or "upgrade" (polling first, then the upgrade: browsers' way)."""

    def __init__(self, url: str, token: str, transport: str, episode_id: int):
        self.token, self.transport, self.episode_id = token, transport, episode_id
        self.updates: list[dict] = []
        self.connects = self.disconnects = 0
        self.joins: list[dict] = []
        self._lock = threading.Lock()
        self.sio = sio_client.Client(reconnection=True, reconnection_delay=0.2,
                                     reconnection_delay_max=1, randomization_factor=0)
        self.sio.on("episode_updated", self._updated, namespace="/episodes")
        self.sio.on("connect", self._connected, namespace="/episodes")
        self.sio.on("disconnect", self._disconnected, namespace="/episodes")
        self.sio.connect(url, namespaces=["/episodes"],
                         transports=None if transport == "upgrade" else [transport],
                         auth=self._auth, wait_timeout=15)

    def _auth(self) -> dict:
        with self._lock:
            ids = [e["id"] for e in self.updates if e.get("id")]
        return {"token": self.token, **({"last_event_id": max(ids)} if ids else {})}

    def _updated(self, data: dict) -> None:
        with self._lock:
            self.updates.append(data)

    def _connected(self) -> None:
        self.connects += 1
        self.sio.emit("join", {"episode_id": self.episode_id}, namespace="/episodes",
                      callback=self.joins.append)

    def _disconnected(self, *reason) -> None:
        self.disconnects += 1

    def titles(self) -> list[str]:
        with self._lock:
            return [e["data"]["title"] for e in self.updates]

    def close(self) -> None:
        self.sio.disconnect()


def test_deploy_files_name_every_queue_once_and_set_forwarded_for_in_nginx():
    """The Procfile and the systemd units start the same workers, which between them consume
    every queue once; nginx overwrites X-Forwarded-For and the app trusts one proxy."""
    queues = procfile_worker_queues()
    consumed = [q for group in queues for q in group.split(",")]
    assert sorted(consumed) == sorted([EVENTS, NOTIFICATIONS, JOBS, MAINTENANCE])
    units = sorted((DEPLOY / "systemd").glob("episode-control-worker-*.service"))
    unit_queues = []
    for unit in units:
        [line] = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
        args = shlex.split(line)
        unit_queues.append(args[args.index("-Q") + 1])
    assert sorted(unit_queues) == sorted(queues)
    assert sum("celery_app beat" in command for command in procfile().values()) == 1
    site = SITE.read_text()
    assert re.search(r"^\s*proxy_set_header X-Forwarded-For \$remote_addr;", site, re.M)
    assert "proxy_add_x_forwarded_for" not in site
    assert re.search(r"^\s*hash \$remote_addr consistent;", site, re.M)
    env = (DEPLOY / "episode-control.env.example").read_text()
    assert re.search(r"^TRUSTED_PROXIES=1$", env, re.M)


def _patch(url: str, episode_id: int, headers: dict, title: str, **extra: str) -> None:
    r = requests.patch(f"{url}/api/v1/episodes/{episode_id}", json={"title": title},
                       headers={**headers, **extra}, timeout=15)
    assert r.status_code == 200, r.text


@pytest.mark.redis
@needs_nginx
def test_cluster_behind_nginx_survives_a_killed_web_process(app, factory, admin, editor):
    kinds = ("websocket", "polling", "upgrade")
    users = [factory.user("viewer") for _ in range(2 * len(kinds))]
    # A killed process's sockets leave presence after this (the survivor pops them).
    with cluster(PRESENCE_STALE_SECONDS="2") as c:
        doomed, survivor = c.webs
        sources = c.sources_per_web(each=len(kinds))  # client addresses nginx sends to each process
        ep = requests.post(f"{c.url}/api/v1/episodes", headers=editor.headers, timeout=15,
                           json={"title": "T0", "episode_number": 16}).json()
        placed = [(web, ip, transport) for web in (doomed, survivor)
                  for ip, transport in zip(sources[web.url], kinds, strict=False)]
        clients = [ClusterClient(c.relay(ip).url, user.token, transport, ep["id"])
                   for (_, ip, transport), user in zip(placed, users, strict=True)]
        on_doomed, on_survivor = clients[:len(kinds)], clients[len(kinds):]
        upgraded = [x for x in clients if x.transport == "upgrade"]
        try:
            assert _eventually(lambda: all(len(x.joins) == 1 for x in clients))
            assert all(x.joins[0]["ok"] for x in clients), [x.joins for x in clients]
            # The upgrade reached the process that holds the polling session (sticky).
            assert _eventually(lambda: all(x.sio.transport() == "websocket" for x in upgraded))
            viewers = requests.get(f"{c.url}/api/v1/presence/episode/{ep['id']}/viewers",
                                   headers=admin.headers, timeout=15).json()["items"]
            assert {v["id"] for v in viewers} == {u.id for u in users}

            assert requests.get(f"{c.url}/metrics", timeout=15).status_code == 403  # nginx's
            # A body larger than nginx's buffers each way (spooled to its temp files).
            data = os.urandom(1_000_000)
            r = requests.post(f"{c.url}/api/v1/episodes/{ep['id']}/files", timeout=60,
                              headers=editor.headers,
                              files={"file": ("big.bin", data, "application/octet-stream")})
            assert r.status_code == 201, r.text
            url = requests.get(f"{c.url}/api/v1/files/{r.json()['id']}/download-url",
                               headers=editor.headers, timeout=15).json()["url"]
            got = requests.get(url if url.startswith("http") else c.url + url, timeout=60)
            assert got.status_code == 200 and got.content == data

            # Through nginx from a known address, with a forged X-Forwarded-For: the app
            # records the address nginx saw, not the forgery.
            editor_ip = sources[doomed.url][0]
            _patch(c.relay(editor_ip).url, ep["id"], editor.headers, "T1",
                   **{"X-Forwarded-For": "203.0.113.9"})
            assert _eventually(lambda: all(x.titles() == ["T1"] for x in clients)), \
                [x.titles() for x in clients]

            def update_ips() -> list[str]:
                items = requests.get(f"{c.url}/api/v1/activity", headers=admin.headers,
                                     params={"user_id": editor.id, "action": "updated"},
                                     timeout=15).json()["items"]
                return [item["ip_address"] for item in items]

            assert _eventually(update_ips)
            assert update_ips() == [editor_ip]

            # Kill one web process; its clients stay offline (their network is down) while
            # two more updates go out, so that they can only get those by replay.
            for ip in sources[doomed.url]:
                c.relay(ip).blocked.set()
            os.killpg(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait(15)
            assert _eventually(lambda: all(x.disconnects >= 1 for x in on_doomed))
            _patch(c.url, ep["id"], editor.headers, "T2")
            _patch(c.url, ep["id"], editor.headers, "T3")
            assert _eventually(lambda: all(x.titles() == ["T1", "T2", "T3"]
                                           for x in on_survivor)), [x.titles() for x in clients]
            for ip in sources[doomed.url]:
                c.relay(ip).blocked.clear()
            # Back through nginx, on the survivor: the missed events first, then the room.
            assert _eventually(lambda: all(x.titles() == ["T1", "T2", "T3"] and len(x.joins) == 2
                                           for x in on_doomed)), [x.titles() for x in on_doomed]
            assert all(x.joins[1]["ok"] for x in on_doomed), [x.joins for x in on_doomed]
            assert _eventually(lambda: all(x.sio.transport() == "websocket" for x in upgraded))
            _patch(c.url, ep["id"], editor.headers, "T4")
            assert _eventually(lambda: all(x.titles() == ["T1", "T2", "T3", "T4"]
                                           for x in clients)), [x.titles() for x in clients]
            assert all(x.disconnects == 0 for x in on_survivor)

            # Presence: the dead process's sockets are gone, the reconnected ones count.
            def presence_right() -> bool:
                stats = requests.get(f"{c.url}/api/v1/presence/stats", headers=admin.headers,
                                     timeout=15).json()
                viewers = requests.get(f"{c.url}/api/v1/presence/episode/{ep['id']}/viewers",
                                       headers=admin.headers, timeout=15).json()["items"]
                return (stats["connections_by_namespace"] == {"/episodes": len(clients)}
                        and sorted(v["id"] for v in viewers) == sorted(u.id for u in users))

            assert _eventually(presence_right)
            for user in users:
                them = requests.get(f"{c.url}/api/v1/presence/users/{user.id}",
                                    headers=admin.headers, timeout=15).json()
                assert them["status"] == "online"
            assert "Traceback" not in survivor.output()
        finally:
            for x in clients:
                x.close()
