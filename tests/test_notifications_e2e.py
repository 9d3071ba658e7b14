"""Notifications across real processes: a web server (``python wsgi.py``, eventlet), a Celery
worker with two prefork processes on the Redis broker, and a python-socketio client over the
wire. The worker processes deliver concurrently; the rate limit still holds exactly, because
it is counted in Redis."""
from __future__ import annotations

import queue
import time

import pytest
import requests
import socketio as sio_client
from sqlalchemy import func, select

from app.extensions import db
from app.models import Notification

pytestmark = pytest.mark.redis


def _count(app, *conditions) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Notification).where(*conditions))


def test_rate_limit_holds_across_worker_processes(app, server, worker, admin, editor):
    api = f"{server.url}/api/v1"
    r = requests.put(f"{api}/notifications/preferences", headers=editor.headers,
                     json={"digest_frequency": "hourly"}, timeout=10)
    assert r.status_code == 200
    received: queue.Queue = queue.Queue()
    client = sio_client.Client(reconnection=False)
    client.on("notification", lambda data: received.put(data), namespace="/feed")
    client.connect(server.url, namespaces=["/feed"], auth={"token": editor.token},
                   transports=["websocket"], wait_timeout=10)
    try:
        with requests.Session() as http:
            for n in range(55):
                r = http.post(f"{api}/notifications", headers=admin.headers, timeout=10,
                              json={"user_ids": [editor.id], "title": f"n{n}", "type": "episode:updated"})
                assert r.status_code == 202, r.text
        deadline = time.monotonic() + 30
        while (time.monotonic() < deadline
               and _count(app, Notification.delivered_at.is_not(None)) < 55):
            time.sleep(0.1)
        assert _count(app, Notification.delivered_at.is_not(None)) == 55, worker.output()[-3000:]
        pushed = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # let the last pushes cross Redis, and no extra come
            try:
                pushed.append(received.get(timeout=0.2))
            except queue.Empty:
                if len(pushed) >= 50:
                    break
        time.sleep(0.5)
        while not received.empty():
            pushed.append(received.get())
    finally:
        client.disconnect()
    assert len(pushed) == 50, worker.output()[-3000:]
    assert len({e["data"]["id"] for e in pushed}) == 50  # no duplicates
    assert _count(app, Notification.digest_pending.is_(True)) == 5
    # Both worker processes really delivered events.
    log = worker.output()
    assert "ForkPoolWorker-1" in log and "ForkPoolWorker-2" in log
