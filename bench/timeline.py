"""What the delivery timeline costs delivery: batches delivered in process, timeline on vs off.

    BENCH_REDIS=redis://127.0.0.1:6394 python bench/timeline.py [--events 4000] [--db ec_bench_timeline]

Records ``--events`` episode updates (each one rule recipient: a notification row, its
decisions), then delivers them in batches of 200 in this process, alternately
with ``DELIVERY_TIMELINE`` off and on, twice each (fresh events each time, same database), and prints
events per second for each and the rows the timeline wrote.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--db", default="ec_bench_timeline")
    args = parser.parse_args()
    os.environ.update({"DATABASE_URL": fresh_database(args.db), "APP_ENV": "development",
                       "EMBEDDED_WORKER": "0", "INSTANCE_DIR": f"/tmp/{args.db}-instance",
                       "LOG_LEVEL": "WARNING"})
    os.environ.pop("REDIS_URL", None)

    from flask_migrate import upgrade
    from sqlalchemy import func, select

    from app import create_app
    from app.extensions import db
    from app.models import DeliveryStep, Episode, NotificationDecision, User
    from app.services import delivery, events

    app = create_app(SOCKETIO_MESSAGE_QUEUE=None)
    with app.app_context():
        upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))
        owner = User(email="owner@example.com", name="Owner", role="editor")
        actor = User(email="actor@example.com", name="Actor", role="editor")
        for user in (owner, actor):
            user.set_password("password123")
            db.session.add(user)
        db.session.flush()
        episode = Episode(title="Bench", episode_number=1, created_by=owner.id)
        db.session.add(episode)
        db.session.commit()
        owner_id, actor_id, episode_id = owner.id, actor.id, episode.id

    def run(timeline: bool) -> float:
        app.config["DELIVERY_TIMELINE"] = timeline
        with app.app_context():
            actor_row = db.session.get(User, actor_id)
            events.enqueue_many = lambda ids: True  # noqa: B023 - deliver below, not via Celery
            for start in range(0, args.events, 500):
                events.record_many([{"name": "episode_updated", "action": "updated",
                                     "actor": actor_row, "resource_type": "episode",
                                     "resource_id": episode_id, "resource_name": "Bench",
                                     "payload": {"episode_id": episode_id, "title": "Bench",
                                                 "created_by": owner_id}}
                                    for _ in range(min(500, args.events - start))])
                db.session.commit()
            began = time.perf_counter()
            delivered = 0
            while True:
                done = delivery.deliver_batch()
                if not done:
                    break
                delivered += len(done)
            elapsed = time.perf_counter() - began
        return delivered / elapsed

    # Off, on, off, on: the second pair on a fuller database, so order shows as noise.
    off, on = run(False), run(True)
    off2, on2 = run(False), run(True)
    off, on = (off + off2) / 2, (on + on2) / 2
    with app.app_context():
        steps = db.session.scalar(select(func.count()).select_from(DeliveryStep))
        notes = db.session.scalar(select(func.count()).select_from(NotificationDecision))
    print(f"{args.events} events per run, batches of {delivery.BATCH_SIZE}")
    print(f"timeline off: {off:,.0f} events/s delivered")
    print(f"timeline on:  {on:,.0f} events/s delivered ({(1 - on / off) * 100:+.1f}% slower); "
          f"wrote {steps} steps and {notes} decisions")


if __name__ == "__main__":
    main()
