"""Prometheus metrics (``/metrics``, app/metrics.py) and the liveness/readiness probes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app import metrics
from app.extensions import db
from app.models import DomainEvent, utcnow
from tests.conftest import make_test_app
from tests.processes import free_port
from tests.services import have_redis_server, redis_server

needs_redis_server = pytest.mark.skipif(not have_redis_server(), reason="redis-server not installed")


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) → value, from an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client, **kwargs) -> str:
    r = client.get("/metrics", **kwargs)
    assert r.status_code == 200, r.json
    assert r.mimetype == "text/plain"
    return r.get_data(as_text=True)


# --- access ---------------------------------------------------------------------------

def test_loopback_is_allowed_by_default(client):
    assert "ec_http_requests_total" in scrape(client)


def test_address_outside_the_allow_list_is_403_json(app):
    app = make_test_app(METRICS_ALLOW="10.0.0.0/8")
    r = app.test_client().get("/metrics")
    assert r.status_code == 403
    assert r.json["error"]["code"] == "forbidden" and r.json["error"]["message"]
    ok = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200


def test_token_required_when_the_address_is_not_allowed(app):
    app = make_test_app(METRICS_ALLOW="", METRICS_TOKEN="s3cret-token")
    client = app.test_client()
    r = client.get("/metrics")
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    r = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert "details" in r.json["error"]
    scrape(client, headers={"Authorization": "Bearer s3cret-token"})


def test_metrics_off_means_no_endpoint():
    app = make_test_app(METRICS_ENABLED=False)
    try:
        assert app.test_client().get("/metrics").status_code == 404
    finally:
        make_test_app()  # the hooks are process-wide: turn them back on for later tests


# --- what is measured -----------------------------------------------------------------

def test_http_requests_are_labelled_by_url_rule_not_path(client, editor):
    before = scrape(client)
    for _ in range(2):
        assert client.get("/api/v1/episodes/999999", headers=editor.headers).status_code == 404
    after = scrape(client)
    labels = {"method": "GET", "route": "/api/v1/episodes/<int:episode_id>", "status": "404"}
    assert value(after, "ec_http_requests_total", **labels) - \
        value(before, "ec_http_requests_total", **labels) == 2
    assert value(after, "ec_http_request_duration_seconds_count", method="GET",
                 route="/api/v1/episodes/<int:episode_id>") >= 2
    assert "/api/v1/episodes/999999" not in after
    client.open("/api/v1/episodes", method="BREW")
    assert 'method="BREW"' not in scrape(client)


def test_episode_update_counts_recorded_delivered_and_lag(client, editor):
    before = scrape(client)
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "Pilot", "episode_number": 1})
    assert r.status_code == 201
    r = client.patch(f"/api/v1/episodes/{r.json['id']}", headers=editor.headers,
                     json={"title": "Pilot 2"})
    assert r.status_code == 200
    after = scrape(client)  # eager tasks: delivered before the response

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ec_events_recorded_total", event="episode_updated") == 1
    assert grew("ec_events_delivered_total", event="episode_updated") == 1
    assert grew("ec_event_delivery_lag_seconds_count") == 2
    assert grew("ec_event_emit_lag_seconds_count") == 2
    assert value(after, "ec_outbox_backlog_events") == 0
    assert value(after, "ec_outbox_oldest_undelivered_age_seconds") == 0


def test_rolled_back_events_are_not_counted(app, editor):
    from app.models import User
    from app.services import events

    before = metrics.EVENTS_RECORDED.labels("episode_created")._value.get()
    with app.app_context():
        user = db.session.get(User, editor.id)
        events.record("episode_created", action="created", actor=user, resource_type="episode",
                      resource_id=None)
        db.session.rollback()
    assert metrics.EVENTS_RECORDED.labels("episode_created")._value.get() == before


def _undelivered_event(app, editor, age: timedelta) -> None:
    """One event left in the outbox (no wake-up), recorded ``age`` ago."""
    from app.models import User
    from app.services import events

    with app.app_context():
        user = db.session.get(User, editor.id)
        events.record("episode_created", action="created", actor=user, resource_type="episode",
                      resource_id=None)
        db.session.info.pop("ec_on_commit", None)  # no wake-up: the event stays undelivered
        db.session.commit()
        db.session.execute(update(DomainEvent).values(created_at=utcnow() - age))
        db.session.commit()


def test_outbox_backlog_and_age_are_read_at_scrape_time(app, client, editor):
    _undelivered_event(app, editor, timedelta(seconds=90))
    text = scrape(client)
    assert value(text, "ec_outbox_backlog_events") == 1
    assert 90 <= value(text, "ec_outbox_oldest_undelivered_age_seconds") < 3600


def test_queue_depth_of_the_embedded_broker_is_reported(client):
    text = scrape(client)
    for queue in ("events", "notifications", "jobs", "maintenance"):
        assert ("ec_celery_queue_length", (("queue", queue),)) in samples(text)


@pytest.mark.redis
def test_queue_depth_is_read_from_redis_lists(app):
    import redis

    client = redis.Redis.from_url(app.extensions["celery"].conf.broker_url)
    client.delete("maintenance")
    client.rpush("maintenance", "a", "b", "c")
    try:
        assert metrics.queue_depths(app)["maintenance"] == 3
    finally:
        client.delete("maintenance")


def test_notification_decision_counts_each_outcome(client):
    before = scrape(client)
    for outcome in sorted(metrics.NOTIFICATION_OUTCOMES):
        metrics.notification_decision(outcome)
    metrics.notification_decision("digest", 4)
    after = scrape(client)
    for outcome in metrics.NOTIFICATION_OUTCOMES:
        grew = value(after, "ec_notification_decisions_total", outcome=outcome) - \
            value(before, "ec_notification_decisions_total", outcome=outcome)
        assert grew == (5 if outcome == "digest" else 1), outcome
    with pytest.raises(ValueError):
        metrics.notification_decision("lost_in_the_mail")


def test_job_outcome_and_duration_by_type(client, editor):
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "Jobs", "episode_number": 2})
    before = scrape(client)
    r = client.post("/api/v1/jobs", headers=editor.headers,
                    json={"type": "noop", "episode_id": r.json["id"]})
    assert r.status_code == 201
    after = scrape(client)
    assert value(after, "ec_jobs_finished_total", type="noop", outcome="completed") - \
        value(before, "ec_jobs_finished_total", type="noop", outcome="completed") == 1
    assert value(after, "ec_job_duration_seconds_count", type="noop", outcome="completed") - \
        value(before, "ec_job_duration_seconds_count", type="noop", outcome="completed") == 1


def test_sockets_per_namespace_gauge_and_counters(app, client, editor):
    from app.extensions import socketio

    before = scrape(client)
    sock = socketio.test_client(app, namespace="/feed", auth={"token": editor.token},
                                flask_test_client=client)
    assert sock.is_connected("/feed")
    during = scrape(client)
    sock.disconnect(namespace="/feed")
    after = scrape(client)
    assert value(during, "ec_socket_connections", namespace="/feed") - \
        value(before, "ec_socket_connections", namespace="/feed") == 1
    assert value(after, "ec_socket_connections", namespace="/feed") == \
        value(before, "ec_socket_connections", namespace="/feed")
    assert value(after, "ec_socket_connects_total", namespace="/feed") - \
        value(before, "ec_socket_connects_total", namespace="/feed") == 1
    assert value(after, "ec_socket_disconnects_total", namespace="/feed") - \
        value(before, "ec_socket_disconnects_total", namespace="/feed") == 1


def test_reset_empties_the_multiprocess_directory(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("not ours")
    assert metrics.reset(str(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# --- health ---------------------------------------------------------------------------

def test_live_checks_nothing():
    down = make_test_app(SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:"
                                                 f"{free_port()}/nothing",
                         REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    r = down.test_client().get("/api/v1/health/live")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_ready_when_everything_answers(client):
    r = client.get("/api/v1/health/ready")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "ready" and r.json["failed"] == []
    assert r.json["checks"]["database"] == "ok" and r.json["checks"]["outbox"] == "ok"


def test_ready_is_503_when_the_database_is_down():
    down = make_test_app(SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:"
                                                 f"{free_port()}/nothing", REDIS_URL=None)
    r = down.test_client().get("/api/v1/health/ready")
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert r.json["status"] == "not_ready" and r.json["failed"] == ["database"]


def test_ready_is_503_when_the_outbox_lags(app, editor):
    _undelivered_event(app, editor, timedelta(minutes=10))
    lagging = make_test_app(HEALTH_READY_OUTBOX_LAG_SECONDS=60)
    r = lagging.test_client().get("/api/v1/health/ready")
    assert r.status_code == 503
    assert r.json["failed"] == ["outbox"] and r.json["checks"]["outbox"] == "lagging"
    assert r.json["outbox_lag_seconds"] >= 600
    # A failing event (waiting out its backoff) does not take the process out of rotation.
    with app.app_context():
        db.session.execute(update(DomainEvent).values(last_error="boom", attempts=1))
        db.session.commit()
    assert lagging.test_client().get("/api/v1/health/ready").status_code == 200


@needs_redis_server
def test_ready_is_503_when_redis_stops_and_health_stays_200(app):
    with redis_server() as server:
        app = make_test_app(REDIS_URL=server.url)
        client = app.test_client()
        assert client.get("/api/v1/health/ready").status_code == 200
        server.kill()  # our throwaway server, never the machine's
        r = client.get("/api/v1/health/ready")
        assert r.status_code == 503
        assert "redis" in r.json["failed"] and r.json["checks"]["redis"] == "unavailable"
        assert client.get("/api/v1/health").status_code == 200  # the contract: degraded, 200
        assert client.get("/api/v1/health/live").status_code == 200


def test_probes_are_in_the_openapi_spec(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert paths["/api/v1/health/live"]["get"]["security"] == []
    ready = paths["/api/v1/health/ready"]["get"]
    assert ready["security"] == [] and {"200", "503"} <= set(ready["responses"])


def test_dashboard_and_alerts_use_only_exported_names(client):
    import json
    import re
    from pathlib import Path

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    text = scrape(client)
    exported = {sample for sample, _labels in samples(text)}
    for family in text_string_to_metric_families(text):  # families with no sample yet too
        exported |= {family.name, f"{family.name}_total"} if family.type == "counter" \
            else {family.name}
    dashboard = json.loads((deploy / "grafana" / "episode-control.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append((deploy / "prometheus" / "alerts.yml").read_text())
    used = {name for expr in exprs for name in re.findall(r"\bec_[a-z_]+", expr)}
    # Histograms export _bucket only once observed: name the family for those.
    missing = {name for name in used if name not in exported
               and re.sub(r"_(bucket|count|sum)$", "", name) not in exported}
    assert not missing, missing
    assert len(used) >= 12
