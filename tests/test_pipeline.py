"""The event pipeline: outbox rows with every change, idempotent delivery, re-delivery."""
from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import ActivityLog, DomainEvent, utcnow
from app.services import delivery
from tests.conftest import make_test_app


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _actions(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [(r.resource_type, r.action)
                for r in db.session.scalars(select(ActivityLog).order_by(ActivityLog.id))]


def test_every_change_is_recorded_and_delivered(app, client, editor, viewer):
    ep = client.post("/api/v1/episodes", headers=editor.headers,
                     json={"title": "Chronicle", "episode_number": 1},
                     environ_base={"REMOTE_ADDR": "10.1.2.3"}).json
    client.patch(f"/api/v1/episodes/{ep['id']}", headers=editor.headers, json={"title": "Chronicle 2"})
    client.post(f"/api/v1/episodes/{ep['id']}/publish", headers=editor.headers)
    f = client.post(f"/api/v1/episodes/{ep['id']}/files", headers=editor.headers,
                    data={"file": (io.BytesIO(b"x"), "x.txt")}, content_type="multipart/form-data").json
    url = client.get(f"/api/v1/files/{f['id']}/download-url", headers=viewer.headers).json["url"]
    client.get(url.split("localhost", 1)[1])
    client.delete(f"/api/v1/files/{f['id']}", headers=editor.headers)
    client.delete(f"/api/v1/episodes/{ep['id']}", headers=editor.headers)
    assert _actions(app) == [
        ("episode", "created"), ("episode", "updated"), ("episode", "published"),
        ("file", "uploaded"), ("file", "downloaded"), ("file", "deleted"), ("episode", "deleted"),
    ]
    with app.app_context():
        rows = list(db.session.scalars(select(ActivityLog).order_by(ActivityLog.id)))
        assert rows[0].ip_address == "10.1.2.3" and rows[0].user_agent
        assert rows[1].changes == {"title": {"before": "Chronicle", "after": "Chronicle 2"}}
        assert rows[4].user_id == viewer.id  # who asked for the download URL
        assert all(e.delivered_at is not None for e in db.session.scalars(select(DomainEvent)))


def test_job_transitions_are_recorded(app, client, editor, episode):
    job = client.post("/api/v1/jobs", headers=editor.headers,
                      json={"type": "noop", "episode_id": episode["id"], "params": {"fail_times": 99}}).json
    with app.app_context():
        names = [e.name for e in db.session.scalars(
            select(DomainEvent).where(DomainEvent.resource_type == "job").order_by(DomainEvent.id))]
    assert names[0] == "job_created"
    assert ("job", "created") in _actions(app)
    assert job["type"] == "noop"


def test_an_update_that_changes_nothing_records_nothing(app, client, editor, episode):
    before = _count(app, DomainEvent)
    r = client.patch(f"/api/v1/episodes/{episode['id']}", headers=editor.headers,
                     json={"title": episode["title"]})
    assert r.status_code == 200
    assert _count(app, DomainEvent) == before


def test_delivering_an_event_twice_writes_one_row(app, client, editor, episode):
    with app.app_context():
        event_id = db.session.scalar(select(DomainEvent.id))
        assert delivery.deliver_event(event_id) is False  # already delivered
        db.session.execute(update(DomainEvent).values(delivered_at=None))
        db.session.commit()
        assert delivery.deliver_event(event_id) is True  # delivered again (at least once) ...
    assert _count(app, ActivityLog, ActivityLog.event_id == event_id) == 1  # ... one row


def _undeliverable_app(**overrides):
    """An app whose Celery broker cannot be reached."""
    from config import TestConfig

    celery = TestConfig.celery() | {"broker_url": "redis://127.0.0.1:1/0", "task_always_eager": False}
    return make_test_app(CELERY=celery, **overrides)


def test_request_succeeds_while_broker_is_down_and_redelivery_catches_up(app, editor):
    down = _undeliverable_app()
    started = time.monotonic()
    r = down.test_client().post("/api/v1/episodes", headers=editor.headers,
                                json={"title": "Offline", "episode_number": 7})
    elapsed = time.monotonic() - started
    assert r.status_code == 201
    assert elapsed < 5  # fails fast, not a hang
    assert _count(app, ActivityLog) == 0
    with app.app_context():
        event = db.session.scalar(select(DomainEvent))
        assert event.delivered_at is None
    # Not yet past the grace period: the sweep leaves it alone.
    with app.app_context():
        assert delivery.redeliver_stale() == []
        db.session.execute(update(DomainEvent).values(created_at=utcnow() - timedelta(seconds=61)))
        db.session.commit()
    # The broker is back (this app's eager Celery stands in for it): the sweep delivers.
    with app.app_context():
        assert delivery.redeliver_stale() == [event.id]
    assert _count(app, ActivityLog) == 1
    with app.app_context():
        assert db.session.get(DomainEvent, event.id).delivered_at is not None


def test_failing_delivery_backs_off_and_alerts(app, client, editor, caplog):
    client.post("/api/v1/episodes", headers=editor.headers, json={"title": "Bad", "episode_number": 1})
    alerts = []
    broken = ("broken", lambda events: 1 / 0)
    delivery.IN_TRANSACTION_STEPS.append(broken)
    delivery.ALERT_HOOKS.append(lambda message, data: alerts.append(data))
    try:
        with app.app_context():
            event_id = db.session.scalar(select(DomainEvent.id))
            db.session.execute(update(DomainEvent).values(delivered_at=None, attempts=0))
            db.session.commit()
            assert delivery.deliver_event(event_id) is False
            event = db.session.get(DomainEvent, event_id)
            assert event.attempts == 1 and "ZeroDivisionError" in event.last_error
            assert event.next_attempt_at > utcnow()
            app.config["EVENT_MAX_ATTEMPTS_BEFORE_ALERT"] = 3
            for _ in range(3):
                db.session.execute(update(DomainEvent).values(
                    created_at=utcnow() - timedelta(hours=2), next_attempt_at=None))
                db.session.commit()
                delivery.redeliver_stale()
            event = db.session.get(DomainEvent, event_id)
            assert event.delivered_at is None and event.attempts >= 3 and event.alerted
    finally:
        delivery.IN_TRANSACTION_STEPS.remove(broken)
        delivery.ALERT_HOOKS.pop()
    assert len(alerts) == 1 and alerts[0]["event_id"] == event_id
    with app.app_context():
        alert = db.session.scalar(select(DomainEvent).where(DomainEvent.name == "admin_alert"))
        assert alert is not None and alert.payload["event_id"] == event_id
        from app.realtime.emit import routes_for

        assert routes_for(alert) == [("/admin", "admins")]
    assert "still undelivered" in caplog.text
    # The step fixed: the next sweep delivers it, and the partial rows were rolled back.
    with app.app_context():
        db.session.execute(update(DomainEvent).values(next_attempt_at=None))
        db.session.commit()
        delivery.redeliver_stale()
    assert _count(app, ActivityLog, ActivityLog.event_id == event_id) == 1


def test_a_rolled_back_change_leaves_no_event(app, editor):
    from app.models import User
    from app.services import episodes

    with app.app_context():
        user = db.session.get(User, editor.id)
        with pytest.raises(Exception):  # noqa: B017 - the constraint error of the database
            episodes.create_episode(user, {"title": "x" * 10, "episode_number": 1, "status": "bogus"})
        db.session.rollback()
    assert _count(app, DomainEvent) == 0


def test_delivered_events_past_retention_are_purged_undelivered_kept(app, client, editor):
    for n in range(3):
        client.post("/api/v1/episodes", headers=editor.headers, json={"title": f"E{n}", "episode_number": n})
    with app.app_context():
        old = utcnow() - timedelta(days=31)
        db.session.execute(update(DomainEvent).values(created_at=old))
        db.session.execute(update(DomainEvent).where(DomainEvent.id == 3).values(delivered_at=None))
        db.session.commit()
        assert delivery.purge_delivered(30, batch_size=1) == 2
        assert db.session.scalars(select(DomainEvent.id)).all() == [3]
    # The activity rows stay; they just no longer point at an event.
    assert _count(app, ActivityLog) == 3
    assert _count(app, ActivityLog, ActivityLog.event_id.is_(None)) == 2


def test_one_commit_wakes_delivery_once_for_all_its_events(app, monkeypatch):
    """The after-commit wake-up is per commit: a transaction of three events wakes once,
    with all three ids; a rolled-back transaction wakes nobody."""
    from app.services import events

    woken: list[list[int]] = []
    monkeypatch.setattr(events, "enqueue_many", lambda ids: woken.append(list(ids)))
    spec = {"action": "", "actor": None, "resource_type": "system", "resource_id": None}
    with app.app_context():
        first = events.record("admin_alert", **spec).id
        rest = [e.id for e in events.record_many([{"name": "admin_alert", **spec},
                                                  {"name": "admin_alert", **spec}])]
        assert woken == []  # nothing before the commit
        db.session.commit()
        assert woken == [[first, *rest]]
        events.record("admin_alert", **spec)
        db.session.rollback()
        db.session.commit()
    assert woken == [[first, *rest]]


def test_a_released_savepoint_is_not_the_commit(app, monkeypatch):
    """SQLAlchemy calls after_commit when a SAVEPOINT is released too; the wake-up waits for
    the real commit, and an outer rollback drops it."""
    from app.services import events

    woken: list[list[int]] = []
    monkeypatch.setattr(events, "enqueue_many", lambda ids: woken.append(list(ids)))
    spec = {"action": "", "actor": None, "resource_type": "system", "resource_id": None}
    with app.app_context():
        with db.session.begin_nested():
            events.record("admin_alert", **spec)
        assert woken == []
        db.session.rollback()
        with db.session.begin_nested():
            kept = events.record("admin_alert", **spec).id
        db.session.commit()
    assert woken == [[kept]]


def test_a_batch_reads_each_actor_and_episode_once(app, editor, episode, monkeypatch):
    """Delivery reads the rows its events name once per batch, not once per event (the
    session's identity map holds rows weakly, so per-event lookups each paid a SELECT), and
    writes the batch's activity rows in one call; its notifications are pushed with no
    read-backs."""
    import re

    from sqlalchemy import event as sa_event

    from app.models import Notification, User
    from app.services import jobs as job_service

    monkeypatch.setattr(job_service, "enqueue_after_commit", lambda *a, **k: None)
    with app.app_context():
        actor = db.session.get(User, editor.id)
        for _ in range(10):
            job_service.create_job(actor, {"type": "noop", "episode_id": episode["id"]})
        db.session.execute(update(DomainEvent).values(delivered_at=None))  # eager delivery ran
        db.session.execute(Notification.__table__.delete())
        # ... and the pushes of those notifications (outbox events of their own).
        db.session.execute(DomainEvent.__table__.delete().where(DomainEvent.name == "notification"))
        db.session.execute(ActivityLog.__table__.delete())
        db.session.commit()
        db.session.expunge_all()
        del actor

        statements: list[str] = []

        def count(_conn, _cursor, statement, *_args):
            statements.append(statement)

        sa_event.listen(db.engine, "before_cursor_execute", count)
        try:
            delivered = delivery.deliver_batch()
        finally:
            sa_event.remove(db.engine, "before_cursor_execute", count)
    assert len(delivered) >= 10
    def reads_by_id(table: str) -> list[str]:
        return [s for s in statements
                if re.search(rf"FROM {table}\b.*\bWHERE .*\b{table}\.id (IN|=)", s, re.S)]

    assert len(reads_by_id("users")) == 1, reads_by_id("users")
    assert len(reads_by_id("episodes")) == 1, reads_by_id("episodes")
    # The batch's activity rows go in one executemany, with no SELECT of existing rows first.
    assert len([s for s in statements if s.startswith("INSERT INTO activity_logs")]) == 1
    assert not [s for s in statements if s.startswith("SELECT activity_logs")]
    # Preferences are read once for storing and pushing; the push names actors from the
    # batch and claims its rows without counting them first.
    assert len([s for s in statements if "FROM notification_preferences" in s]) == 1
    assert not [s for s in statements if "FROM domain_events JOIN users" in s]
    count_first = r"SELECT notifications.id\s+FROM notifications\s+WHERE notifications.event_id"
    assert not [s for s in statements if re.match(count_first, s)]
    assert _count(app, ActivityLog) == len(delivered)
    assert _count(app, Notification, Notification.type == "job:created") == 10
    assert _count(app, Notification, Notification.delivered_at.is_(None)) == 0  # all pushed
