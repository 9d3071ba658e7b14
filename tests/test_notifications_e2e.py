"""Notifications across real processes: a web server (``python wsgi.py``, eventlet), Celery
workers on the Redis broker (one process, then one with two prefork processes), and a
python-socketio client over the wire. The rate limit holds exactly across processes,
because it is counted in Redis."""
from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import func, select

from app.extensions import db
from app.models import Notification
from tests.helpers import SocketClient, wait_for
from tests.processes import celery_worker

pytestmark = pytest.mark.redis


def _count(app, *conditions) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Notification).where(*conditions))


def _post(api: str, admin, user_id: int, titles: range) -> None:
    with requests.Session() as http:
        for n in titles:
            r = http.post(f"{api}/notifications", headers=admin.headers, timeout=10,
                          json={"user_ids": [user_id], "title": f"n{n}", "type": "episode:updated"})
            assert r.status_code == 202, r.text


def _pushed(feed: SocketClient, count: int) -> list[dict]:
    """The ``notification`` pushes once ``count`` arrived, plus any extra that comes in a
    short settle (each was published before its row was marked delivered)."""
    feed.wait("notification", count=count, timeout=30)
    time.sleep(0.5)
    return feed.drain("notification")


def test_rate_limit_holds_across_worker_processes(app, server, admin, editor):
    """Two worker processes, one after the other so that both surely consume: the first
    pushes its 30 (under the limit of 50), the second 20 of its 25 and holds 5 for the
    digest. A per-process count would let the second push all 25."""
    api = f"{server.url}/api/v1"
    r = requests.put(f"{api}/notifications/preferences", headers=editor.headers,
                     json={"digest_frequency": "hourly"}, timeout=10)
    assert r.status_code == 200
    feed = SocketClient(server.url, editor.token, ["/feed"])
    try:
        with celery_worker(concurrency=1) as first:
            _post(api, admin, editor.id, range(30))
            wait_for(lambda: _count(app, Notification.delivered_at.is_not(None)) == 30, 30,
                     what="30 delivered", describe=lambda: first.output()[-3000:])
            assert len(_pushed(feed, 30)) == 30
            assert _count(app, Notification.digest_pending.is_(True)) == 0
        with celery_worker(concurrency=2) as second:  # a new process, concurrent children
            _post(api, admin, editor.id, range(30, 55))
            wait_for(lambda: _count(app, Notification.delivered_at.is_not(None)) == 55, 30,
                     what="55 delivered", describe=lambda: second.output()[-3000:])
            assert len(pushed := _pushed(feed, 50)) == 50, second.output()[-3000:]
        assert first.proc.pid != second.proc.pid
        assert "succeeded" in first.output() and "succeeded" in second.output()
    finally:
        feed.close()
    assert len({e["data"]["id"] for e in pushed}) == 50  # no duplicates
    assert _count(app, Notification.digest_pending.is_(True)) == 5
