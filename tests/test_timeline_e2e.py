"""Issue 16 across real processes: a web server (``python wsgi.py``, eventlet) and a Celery
worker (prefork, Redis broker, ``LOG_FORMAT=json``). A request's ``X-Request-ID`` reaches the
worker's log line for its event; a muted type, quiet hours, a rate-limited burst and a
digest each show their reason in the admin timeline, read over HTTP from the server."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from sqlalchemy import select

from app.extensions import db
from app.models import DomainEvent, Notification
from tests.test_notifications import quiet_now, smtp  # noqa: F401 - a fixture

pytestmark = pytest.mark.redis

RATE_LIMIT = 3


@pytest.fixture(scope="module")
def json_worker(_schema):
    """A real worker writing JSON lines, with a small hourly rate limit to reach quickly."""
    from tests.processes import celery_worker

    with celery_worker(concurrency=2, LOG_FORMAT="json",
                       NOTIFICATION_RATE_LIMIT_PER_HOUR=str(RATE_LIMIT)) as worker:
        yield worker


def _wait(predicate, what: str, worker, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} never happened; worker log:\n{worker.output()[-3000:]}")


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def test_the_request_id_reaches_the_workers_json_log_line_for_its_event(app, server, json_worker,
                                                                        editor):
    api = f"{server.url}/api/v1"
    request_id = f"e2e-{uuid.uuid4().hex[:12]}"
    r = requests.post(f"{api}/episodes", headers={**editor.headers, "X-Request-ID": request_id},
                      json={"title": "Traced", "episode_number": 1}, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == request_id
    with app.app_context():
        event = db.session.scalar(select(DomainEvent).where(DomainEvent.name == "episode_created"))
        assert event.request_id == request_id
    line = _wait(lambda: next((entry for entry in _json_lines(json_worker.output())
                               if entry["message"] == f"event {event.id} episode_created delivered"
                               and entry.get("request_id") == request_id), None),
                 "the delivery log line", json_worker)
    assert line["event_id"] == event.id and line["user_id"] == editor.id
    assert line["task_id"] and line["level"] == "INFO"
    assert line["process"].startswith("ForkPoolWorker")


def _send(api: str, admin, user, **body) -> int:
    body.setdefault("title", "Hello")
    r = requests.post(f"{api}/notifications", headers=admin.headers,
                      json={"user_ids": [user.id], **body}, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["event_id"]


def _prefs(api: str, user, **prefs) -> None:
    r = requests.put(f"{api}/notifications/preferences", headers=user.headers, json=prefs,
                     timeout=10)
    assert r.status_code == 200, r.text


def _user_decisions(api: str, admin, event_id: int, user_id: int) -> list[tuple[str, str]]:
    r = requests.get(f"{api}/events/{event_id}/timeline/users/{user_id}", headers=admin.headers,
                     timeout=10)
    assert r.status_code == 200, r.text
    return [(d["decision"], d["reason"]) for d in r.json()["decisions"]
            if d["decision"] != "not_a_recipient"]


def _notification_decisions(api: str, admin, notification_id: int) -> list[tuple[str, str]]:
    r = requests.get(f"{api}/notifications/{notification_id}/timeline", headers=admin.headers,
                     timeout=10)
    assert r.status_code == 200, r.text
    return [(d["decision"], d["reason"]) for d in r.json()["decisions"]]


def _notification_of(app, event_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(Notification.id).where(Notification.event_id == event_id))


@pytest.mark.usefixtures("smtp")
def test_muted_quiet_hours_rate_limit_and_digest_each_show_their_reason(app, server, json_worker,
                                                                        factory, admin):
    api = f"{server.url}/api/v1"
    muted, quiet, busy = (factory.user("editor") for _ in range(3))
    _prefs(api, muted, muted_types=["user:mention"])
    _prefs(api, quiet, quiet_hours=quiet_now("UTC"), digest_frequency="hourly")
    _prefs(api, busy, digest_frequency="hourly")

    # A muted type: no notification, and the timeline for that user and event says why.
    event_id = _send(api, admin, muted, type="user:mention")
    assert ("muted", "preference") in _wait(
        lambda: _user_decisions(api, admin, event_id, muted.id), "the muted decision", json_worker)
    assert _notification_of(app, event_id) is None

    # Quiet hours: stored, not pushed, folded into the digest.
    event_id = _send(api, admin, quiet, type="user:mention", title="Hush")
    nid = _wait(lambda: _notification_of(app, event_id), "the quiet-hours row", json_worker)
    decided = _wait(lambda: [d for d in _notification_decisions(api, admin, nid)
                             if d[0] == "digest"] and _notification_decisions(api, admin, nid),
                    "the quiet-hours decision", json_worker)
    assert ("quiet_hours", "quiet_hours") in decided and ("digest", "quiet_hours") in decided
    assert not any(outcome == "pushed" for outcome, _ in decided)

    # A burst over the hourly limit: the first ones pushed, the one over it held for the digest.
    burst = [_send(api, admin, busy, type="episode:updated", title=f"n{n}")
             for n in range(RATE_LIMIT + 1)]
    ids = [_wait(lambda e=e: _notification_of(app, e), "a burst row", json_worker) for e in burst]
    # Two worker processes dispatch concurrently, so which row is counted last is theirs
    # to decide: wait until every row is decided, then exactly one is over the limit.
    def all_decided():
        found = {nid: _notification_decisions(api, admin, nid) for nid in ids}
        done = all(any(o in ("pushed", "digest") for o, _ in d) for d in found.values())
        return found if done else None

    decided_burst = _wait(all_decided, "every burst decision", json_worker)
    over_ids = [nid for nid, d in decided_burst.items() if ("rate_limited", "rate_limited") in d]
    assert len(over_ids) == 1
    over = decided_burst[over_ids[0]]
    assert ("digest", "rate_limited") in over and not any(o == "pushed" for o, _ in over)
    assert all(("pushed", "send") in d for nid, d in decided_burst.items() if nid != over_ids[0])

    # The digest goes out (beat's task, run here against the same database and a real SMTP
    # server) and the held notifications say they were in it.
    with app.app_context():
        from app.services import notifications

        assert notifications.send_digests() == 2
    assert ("digest_sent", "hourly") in _notification_decisions(api, admin, nid)
    assert ("digest_sent", "hourly") in _notification_decisions(api, admin, over_ids[0])
