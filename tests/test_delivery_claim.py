"""Two workers delivering at once deliver each event once (the embedded default runs its
delivery tasks on two threads; PostgreSQL workers claim with SKIP LOCKED)."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from app.extensions import db
from app.models import ActivityLog, DomainEvent
from app.services import delivery
from tests.test_job_processing import no_worker


def test_concurrent_deliveries_deliver_each_event_once(app, client, editor, monkeypatch):
    with no_worker(app):
        for n in range(5):
            assert client.post("/api/v1/episodes", headers=editor.headers,
                               json={"title": f"Race {n}", "episode_number": n + 1}
                               ).status_code == 201
    # Hold each delivery transaction open long enough for the other thread to claim too.
    steps = [("hold", lambda events: time.sleep(0.3)), *delivery.IN_TRANSACTION_STEPS]
    monkeypatch.setattr(delivery, "IN_TRANSACTION_STEPS", steps)
    start = threading.Barrier(2)
    delivered: list[list[int]] = []

    def deliver() -> None:
        with app.app_context():
            start.wait()
            delivered.append(delivery.deliver_batch())
            db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with app.app_context():
        events = db.session.execute(select(DomainEvent.id, DomainEvent.attempts)
                                    .where(DomainEvent.name == "episode_created")).all()
        logged = db.session.scalar(select(func.count()).select_from(ActivityLog)
                                   .where(ActivityLog.resource_type == "episode"))
    ids = sorted(i for batch in delivered for i in batch)
    assert ids == sorted(e.id for e in events)  # all delivered, none by both threads
    assert {attempts for _id, attempts in events} == {1}
    assert logged == 5
