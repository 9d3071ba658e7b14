"""Structured logs (request ids through the outbox) and the admin delivery timeline (issue 16)."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from sqlalchemy import func, select, update

from app import logs
from app.extensions import db
from app.models import DeliveryStep, DomainEvent, NotificationDecision, utcnow
from app.services import delivery


def _latest_event(app, name: str) -> DomainEvent:
    with app.app_context():
        return db.session.scalar(select(DomainEvent).where(DomainEvent.name == name)
                                 .order_by(DomainEvent.id.desc()))


# ---- request ids ---------------------------------------------------------------------------


def test_a_request_id_is_returned_generated_or_replaced_when_malformed(client):
    given = client.get("/api/v1/health", headers={"X-Request-ID": "abc-123.x:y_z"})
    assert given.headers["X-Request-ID"] == "abc-123.x:y_z"
    generated = client.get("/api/v1/health").headers["X-Request-ID"]
    assert len(generated) == 32
    for bad in ("x" * 65, "has space", "semi;colon", "<script>"):
        echoed = client.get("/api/v1/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert echoed != bad and len(echoed) == 32


def test_an_error_response_carries_the_request_id_too(client):
    response = client.get("/api/v1/episodes/1", headers={"X-Request-ID": "req-401"})
    assert response.status_code == 401 and response.headers["X-Request-ID"] == "req-401"


def test_the_event_row_keeps_the_request_id_of_the_request_that_recorded_it(app, client, editor):
    response = client.post("/api/v1/episodes", headers={**editor.headers, "X-Request-ID": "req-42"},
                           json={"title": "Traced", "episode_number": 1})
    assert response.status_code == 201
    assert _latest_event(app, "episode_created").request_id == "req-42"


def test_json_lines_carry_the_context_fields():
    record = logging.LogRecord("ec.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    with logs.bound(request_id="r1", user_id=7, event_id=9, task_id="t1"):
        logs.ContextFilter().filter(record)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["level"] == "WARNING"
    assert (entry["request_id"], entry["user_id"], entry["event_id"], entry["task_id"]) == \
        ("r1", 7, 9, "t1")
    assert logs.current("request_id") is None  # the block's fields are gone after it


def test_text_lines_stay_the_default_with_the_fields_appended():
    record = logging.LogRecord("ec.test", logging.INFO, __file__, 1, "plain", (), None)
    with logs.bound(request_id="r2"):
        logs.ContextFilter().filter(record)
    line = logs.TextFormatter().format(record)
    assert line.endswith("plain [request_id=r2]") and not line.startswith("{")


def test_delivery_logs_a_line_per_event_in_its_request_context(app, client, editor, caplog):
    caplog.set_level(logging.INFO, logger="app.services.delivery")
    client.post("/api/v1/episodes", headers={**editor.headers, "X-Request-ID": "req-log"},
                json={"title": "Logged", "episode_number": 1})
    event = _latest_event(app, "episode_created")
    lines = [r for r in caplog.records if r.getMessage() == f"event {event.id} episode_created delivered"]
    assert lines and lines[0].request_id == "req-log" and lines[0].event_id == event.id
    assert lines[0].user_id == editor.id


# ---- event timeline ------------------------------------------------------------------------


def test_an_event_timeline_shows_its_path_to_admins_only(app, client, admin, editor, episode):
    event = _latest_event(app, "episode_created")
    url = f"/api/v1/events/{event.id}/timeline"
    assert client.get(url, headers=editor.headers).status_code == 403
    assert client.get(url).status_code == 401
    missing = client.get("/api/v1/events/999999/timeline", headers=admin.headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    body = client.get(url, headers=admin.headers).json
    assert [s["step"] for s in body["steps"]] == ["recorded", "claimed", "emitted", "delivered"]
    assert body["steps"][1]["detail"]["attempt"] == 1
    assert "/episodes all" in body["steps"][2]["detail"]["rooms"]
    assert "/admin admins" in body["steps"][2]["detail"]["rooms"]
    assert body["event"]["delivered_at"] is not None and body["event"]["attempts"] == 1


def test_a_failed_attempt_is_in_the_timeline_with_its_error(app, client, admin, editor):
    client.post("/api/v1/episodes", headers=editor.headers, json={"title": "Bad", "episode_number": 1})
    broken = ("broken", lambda events: 1 / 0)
    delivery.IN_TRANSACTION_STEPS.append(broken)
    try:
        with app.app_context():
            event_id = db.session.scalar(select(DomainEvent.id))
            db.session.execute(update(DomainEvent).values(delivered_at=None, attempts=0))
            db.session.commit()
            assert delivery.deliver_event(event_id) is False
    finally:
        delivery.IN_TRANSACTION_STEPS.remove(broken)
    with app.app_context():
        assert delivery.deliver_event(event_id) is True
    steps = client.get(f"/api/v1/events/{event_id}/timeline", headers=admin.headers).json["steps"]
    names = [s["step"] for s in steps]
    # The eager delivery at the POST, then (made undelivered again) a failure and a retry.
    assert names == ["recorded", "claimed", "emitted", "delivered",
                     "failed", "claimed", "emitted", "delivered"]
    failed = next(s for s in steps if s["step"] == "failed")
    assert "ZeroDivisionError" in failed["detail"]["error"] and failed["detail"]["attempt"] == 1
    assert names[-3:] == ["claimed", "emitted", "delivered"] and steps[-3]["detail"]["attempt"] == 2


def test_the_timeline_goes_with_its_event_at_the_retention_purge(app, client, admin, editor, episode):
    with app.app_context():
        db.session.add(NotificationDecision(event_id=None, user_id=None, decision="created",
                                            reason="old direct send",
                                            at=utcnow() - timedelta(days=40), detail={}))
        db.session.execute(update(DomainEvent).values(created_at=utcnow() - timedelta(days=40)))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(DeliveryStep)) > 0
        assert delivery.purge_delivered(30) > 0
        assert db.session.scalar(select(func.count()).select_from(DeliveryStep)) == 0
        assert db.session.scalar(select(func.count()).select_from(NotificationDecision)) == 0


def test_the_timeline_endpoints_are_in_the_openapi_spec(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    for path in ("/api/v1/events/{event_id}/timeline",
                 "/api/v1/events/{event_id}/timeline/users/{user_id}",
                 "/api/v1/notifications/{notification_id}/timeline"):
        assert "403" in paths[path]["get"]["responses"] and "404" in paths[path]["get"]["responses"]
