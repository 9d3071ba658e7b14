"""Structured logs (request ids through the outbox) and the admin delivery timeline (issue 16)."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app import logs
from app.extensions import db
from app.models import DeliveryStep, DomainEvent, NotificationDecision, utcnow
from app.services import delivery
from tests.test_metrics import scrape, value
from tests.test_notifications import quiet_now, send, set_prefs, smtp  # noqa: F401 - a fixture


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
    assert line.endswith("MainProcess ec.test: plain [request_id=r2]") and not line.startswith("{")


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


# ---- notification decisions (in process, eager worker) --------------------------------------


def _notification_ids(app, user_id: int) -> list[int]:
    from app.models import Notification

    with app.app_context():
        return list(db.session.scalars(select(Notification.id).where(Notification.user_id == user_id)
                                       .order_by(Notification.id)))


def _decisions(client, admin, notification_id: int) -> list[tuple[str, str]]:
    body = client.get(f"/api/v1/notifications/{notification_id}/timeline", headers=admin.headers)
    assert body.status_code == 200, body.json
    return [(d["decision"], d["reason"]) for d in body.json["decisions"]]


def _decision_counts(client) -> dict[str, float]:
    """``ec_notification_decisions_total`` by outcome, as /metrics shows it."""
    text = scrape(client)
    return {o: value(text, "ec_notification_decisions_total", outcome=o)
            for o in ("pushed", "muted", "quiet_hours", "rate_limited", "digest")}


def _grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {o: after[o] - before[o] for o in before if after[o] != before[o]}


def test_a_muted_type_shows_why_the_user_got_nothing(app, client, admin, editor):
    set_prefs(client, editor, muted_types=["user:mention"])
    before = _decision_counts(client)
    event_id = send(client, admin, user_ids=[editor.id], type="user:mention")["event_id"]
    assert _notification_ids(app, editor.id) == []
    body = client.get(f"/api/v1/events/{event_id}/timeline/users/{editor.id}",
                      headers=admin.headers).json
    assert body["notification_ids"] == []
    assert ("muted", "preference") in [(d["decision"], d["reason"]) for d in body["decisions"]]
    assert _grown(before, _decision_counts(client)) == {"muted": 1}
    # Someone the event never concerned is told so, not answered with silence.
    other = client.get(f"/api/v1/events/{event_id}/timeline/users/{admin.id}",
                       headers=admin.headers).json["decisions"]
    assert other[-1]["decision"] == "not_a_recipient"
    assert client.get(f"/api/v1/events/{event_id}/timeline/users/999999",
                      headers=admin.headers).status_code == 404


@pytest.mark.usefixtures("smtp")
def test_quiet_hours_then_the_digest_show_in_the_notification_timeline(app, client, admin, editor):
    set_prefs(client, editor, quiet_hours=quiet_now("UTC"), digest_frequency="hourly")
    before = _decision_counts(client)
    send(client, admin, user_ids=[editor.id], type="user:mention", title="Hush")
    [nid] = _notification_ids(app, editor.id)
    with app.app_context():
        from app.services import notifications

        assert notifications.send_digests() == 1
    decided = _decisions(client, admin, nid)
    assert ("quiet_hours", "quiet_hours") in decided and ("digest", "quiet_hours") in decided
    assert ("digest_sent", "hourly") in decided
    assert not any(d == "pushed" for d, _ in decided)
    assert _grown(before, _decision_counts(client)) == {"quiet_hours": 1, "digest": 1}
    assert client.get("/api/v1/notifications/999999/timeline", headers=admin.headers).status_code == 404
    assert client.get(f"/api/v1/notifications/{nid}/timeline",
                      headers=editor.headers).status_code == 403


def test_a_rate_limited_burst_shows_the_limit_on_the_one_over_it(app, client, admin, editor):
    app.config["NOTIFICATION_RATE_LIMIT_PER_HOUR"] = 3
    set_prefs(client, editor, digest_frequency="hourly")
    before = _decision_counts(client)
    for n in range(4):
        send(client, admin, user_ids=[editor.id], type="episode:updated", title=f"n{n}")
    ids = _notification_ids(app, editor.id)
    assert len(ids) == 4
    assert ("pushed", "send") in _decisions(client, admin, ids[0])
    last = _decisions(client, admin, ids[-1])
    assert ("rate_limited", "rate_limited") in last and ("digest", "rate_limited") in last
    assert not any(d == "pushed" for d, _ in last)
    assert _grown(before, _decision_counts(client)) == {"pushed": 3, "rate_limited": 1, "digest": 1}


def test_a_rule_event_shows_which_rule_matched(app, client, admin, editor, episode):
    client.post(f"/api/v1/episodes/{episode['id']}/publish", headers=admin.headers)
    event = _latest_event(app, "episode_published")
    body = client.get(f"/api/v1/events/{event.id}/timeline/users/{editor.id}",
                      headers=admin.headers).json
    decided = [d["decision"] for d in body["decisions"] if d["user_id"] == editor.id]
    assert "rule_matched" in decided and "created" in decided and body["notification_ids"]
    actor = client.get(f"/api/v1/events/{event.id}/timeline/users/{admin.id}",
                       headers=admin.headers).json["decisions"]
    assert ("rule_skipped", "the actor") in [(d["decision"], d["reason"]) for d in actor]
