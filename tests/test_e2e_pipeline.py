"""End to end: the outbox with a real Redis broker and real worker processes."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import ActivityLog, DomainEvent, User
from app.services import delivery, episodes
from tests.helpers import wait_for
from tests.processes import celery_worker
from tests.test_pipeline import _undeliverable_app

pytestmark = pytest.mark.redis


def _activity_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(ActivityLog))


def _real_broker(app):
    """The test app, enqueueing to the real Redis broker instead of running tasks inline."""
    celery = app.extensions["celery"]
    celery.conf.task_always_eager = False
    celery.control.purge()  # tasks left by earlier tests name ids that are reused now
    app.config["EVENT_REDELIVERY_GRACE_SECONDS"] = 0
    return app


def test_created_while_broker_down_is_delivered_when_it_is_back(app, editor):
    r = _undeliverable_app().test_client().post(
        "/api/v1/episodes", headers=editor.headers, json={"title": "Stormy", "episode_number": 1})
    assert r.status_code == 201
    _real_broker(app)
    with app.app_context():
        assert db.session.scalar(select(DomainEvent.delivered_at)) is None  # waits in the outbox
    assert _activity_count(app) == 0
    with celery_worker(concurrency=1):
        with app.app_context():
            delivery.redeliver_stale()  # the beat task's work
        wait_for(lambda: _activity_count(app) == 1, 30)
    with app.app_context():
        assert db.session.scalar(select(DomainEvent.delivered_at)) is not None


def test_worker_killed_mid_delivery_loses_nothing(app, editor):
    _real_broker(app)
    total = 3000  # delivery runs in batches: enough that the kill lands mid-way
    with app.app_context():
        user = db.session.get(User, editor.id)
        for n in range(total):
            episodes.create_episode(user, {"title": f"Load {n}", "episode_number": n})
    with celery_worker(concurrency=2) as worker:
        wait_for(lambda: _activity_count(app) > 0, 60, 0.02)
        worker.kill()  # SIGKILL: no chance to finish or acknowledge anything
    delivered_before = _activity_count(app)
    assert delivered_before < total, "the worker finished before it could be killed"
    with celery_worker(concurrency=2):
        def all_delivered() -> bool:
            with app.app_context():
                delivery.redeliver_stale()
                return db.session.scalar(select(func.count()).select_from(DomainEvent)
                                         .where(DomainEvent.delivered_at.is_(None))) == 0
        wait_for(all_delivered, 120, 0.5)
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(ActivityLog))
        distinct = db.session.scalar(select(func.count(func.distinct(ActivityLog.event_id))))
    assert rows == distinct == total
