"""Notification benchmarks on PostgreSQL + Redis, with a real Celery worker process.

    .venv/bin/python bench/notifications.py            # creates database ec_bench_notif

Figures printed (targets from issue 5):
1. fan-out of one admin broadcast to 10,000 users, end to end: POST /notifications → the
   outbox → a real ``celery worker`` process → 10,000 rows written and 10,000 ``notification``
   emits seen on the Socket.IO Redis channel (target < 2 s);
2. unread count and first page of a 100,000-row inbox (target < 10 ms each);
3. mark-all-read on 10,000 unread rows (target < 200 ms).

Environment: ``BENCH_DATABASE_URL`` (default postgresql://postgres@127.0.0.1:5432/ec_bench_notif,
created and rebuilt by the script), ``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/14;
the script FLUSHES that Redis database), ``BENCH_WORKER_PROCESSES`` (2: the worker's prefork
concurrency), ``BENCH_WORKER_LOGLEVEL`` (WARNING).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_URL = os.environ.get("BENCH_DATABASE_URL",
                        "postgresql://postgres@127.0.0.1:5432/ec_bench_notif")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
INSTANCE = Path(tempfile.mkdtemp(prefix="ec-bench-notif-"))
os.environ.update({"DATABASE_URL": DB_URL, "REDIS_URL": REDIS_URL, "APP_ENV": "development",
                   "EMBEDDED_WORKER": "0", "INSTANCE_DIR": str(INSTANCE)})

import psycopg  # noqa: E402
import redis  # noqa: E402
from flask_jwt_extended import create_access_token  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

FANOUT_USERS = 10_000
INBOX_ROWS = 100_000
MARK_ROWS = 10_000
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKER_PROCESSES", "2"))


def recreate_database() -> None:
    parts = urlsplit(DB_URL)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def start_worker() -> subprocess.Popen:
    log = open(INSTANCE / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
         "-l", os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"), "-c", str(WORKER_PROCESSES),
         "-P", "prefork", "-n", f"bench-{os.getpid()}@%h", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    return proc


def wait_worker_ready(app) -> None:
    celery = app.extensions["celery"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if celery.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"worker did not start; see {INSTANCE / 'worker.log'}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


class EmitCounter:
    """Counts ``notification`` emits published on the Socket.IO Redis channel."""

    def __init__(self, client: redis.Redis):
        self.count = 0
        self.last_at = self.first_at = 0.0
        self.ids: list[int] = []
        self.client = client  # keep it: a collected client closes the pubsub connection
        self.pubsub = client.pubsub()
        self.pubsub.subscribe("flask-socketio")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            data = json.loads(message["data"])
            if data.get("method") == "emit" and data.get("event") == "notification":
                self.count += 1
                self.last_at = time.perf_counter()
                if not self.first_at:
                    self.first_at = self.last_at
                self.ids.append(data["data"][0]["data"]["id"])

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.count >= n


def vacuum() -> None:
    """VACUUM ANALYZE the notifications (what autovacuum does after a bulk change)."""
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE notifications")


def publish_baseline(pipelined: bool) -> float:
    """Milliseconds to PUBLISH FANOUT_USERS notification-sized messages to a scratch channel."""
    client = redis.Redis.from_url(REDIS_URL)
    message = json.dumps({"method": "emit", "event": "notification", "namespace": "/feed",
                          "room": "user:1", "data": [{"id": 1, "data": {"title": "x" * 40,
                                                                        "message": "y" * 200}}]})
    start = time.perf_counter()
    target = client.pipeline(transaction=False) if pipelined else client
    for _ in range(FANOUT_USERS):
        target.publish("ec-bench-scratch", message)
    if pipelined:
        target.execute()
    return (time.perf_counter() - start) * 1000


def timed(fn, runs: int = 50) -> tuple[float, float]:
    """(median, p95) in milliseconds after a warm-up."""
    for _ in range(5):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def verdict(value: float, target: float) -> str:
    return "OK" if value < target else "OVER TARGET"


def main() -> None:
    recreate_database()
    redis.Redis.from_url(REDIS_URL).flushdb()

    from flask_migrate import upgrade

    from app import create_app
    from app.api.notifications import notification_dict
    from app.extensions import db
    from app.models import Notification, User, utcnow
    from app.pagination import paginate
    from app.services import notifications as service

    app = create_app()
    with app.app_context():
        upgrade()
        password_hash = "bench-accounts-cannot-log-in"
        now = utcnow()
        db.session.execute(insert(User), [
            {"email": f"bench{i}@example.com", "name": f"Bench User {i}", "role": "viewer",
             "password_hash": password_hash, "is_active": True, "created_at": now, "updated_at": now}
            for i in range(FANOUT_USERS - 1)
        ])
        admin = User(email="admin@example.com", name="Bench Admin", role="admin", password_hash="x")
        db.session.add(admin)
        db.session.commit()
        admin_id = admin.id
        token = create_access_token(identity=admin_id)
        db.session.execute(text("ANALYZE"))
        db.session.commit()

    # ---- 1. fan-out with a real worker ------------------------------------------------------
    worker = start_worker()
    try:
        wait_worker_ready(app)
        counter = EmitCounter(redis.Redis.from_url(REDIS_URL))
        time.sleep(0.2)
        client = app.test_client()
        start = time.perf_counter()
        r = client.post("/api/v1/notifications", headers={"Authorization": f"Bearer {token}"},
                        json={"all": True, "title": "Maintenance tonight", "message": "22:00 UTC",
                              "type": "admin:alert", "priority": "high"})
        request_ms = (time.perf_counter() - start) * 1000
        assert r.status_code == 202, r.json
        done = counter.wait_for(FANOUT_USERS, timeout=60)
        end_to_end = counter.last_at - start
        with app.app_context():
            rows = db.session.scalar(select(func.count()).select_from(Notification))
            delivered = db.session.scalar(select(func.count()).select_from(Notification)
                                          .where(Notification.delivered_at.is_not(None)))
    finally:
        stop(worker)
    print(f"1. fan-out to {FANOUT_USERS:,} users, real worker, PostgreSQL + Redis")
    print(f"   POST /notifications answered in {request_ms:.1f} ms (202; fan-out runs in the worker)")
    print(f"   rows written: {rows:,} (delivered_at set: {delivered:,}); "
          f"notification emits: {counter.count:,}{'' if done else ' (TIMED OUT)'}")
    print(f"   end to end (POST → last emit on the Redis channel): {end_to_end * 1000:.0f} ms "
          f"[target < 2000 ms: {verdict(end_to_end * 1000, 2000)}]")
    print(f"   of which: POST → first emit {(counter.first_at - start) * 1000:.0f} ms (outbox, worker, "
          f"one INSERT ... SELECT), first → last emit {(counter.last_at - counter.first_at) * 1000:.0f} ms"
          f" ({WORKER_PROCESSES} worker processes, {FANOUT_USERS // 1000} range tasks)")
    duplicates = counter.count - len(set(counter.ids))
    print(f"   duplicate pushes: {duplicates}")
    print(f"   reference: {FANOUT_USERS:,} PUBLISH one by one {publish_baseline(False):.0f} ms, "
          f"pipelined {publish_baseline(True):.0f} ms (same message size, this machine, now)")

    # ---- 2. a 100,000-row inbox among other users' rows -------------------------------------
    with app.app_context():
        owner = db.session.get(User, admin_id)
        # Server-side rows: every 4th row is the owner's, the others spread over 9,000 users,
        # so the owner's newest rows are interleaved with everyone else's (the real shape).
        db.session.execute(text(
            "INSERT INTO notifications (user_id, type, title, message, data, priority,"
            " digest_pending, delivered_at, created_at, updated_at, read_at)"
            " SELECT CASE WHEN g % 4 = 0 THEN :owner ELSE 1 + g % 9000 END, 'episode:updated',"
            " 'Episode updated: X', 'Someone changed the title of X.', '{}'::jsonb, 'normal',"
            " false, now(), now(), now(), CASE WHEN g % 4 = 0 THEN NULL ELSE now() END"
            " FROM generate_series(1, :n) AS g"), {"owner": admin_id, "n": INBOX_ROWS * 4})
        db.session.commit()
        vacuum()
        total_rows = db.session.scalar(select(func.count()).select_from(Notification))
        owned = db.session.scalar(select(func.count()).select_from(Notification)
                                  .where(Notification.user_id == admin_id))

        def first_page(unread: bool = False):
            paginate(service.inbox_query(owner, unread=unread), Notification.id,
                     notification_dict, cursor=None, limit=20)
            db.session.rollback()

        def exact():
            service.unread_count(admin_id)
            db.session.rollback()

        def badge():
            service.unread_badge(admin_id)
            db.session.rollback()

        all_unread = {
            "badge": timed(badge), "exact": timed(exact, runs=20), "page": timed(first_page),
            "unread_page": timed(first_page_unread := lambda: first_page(True)),
        }
        headers = {"Authorization": f"Bearer {token}"}
        http_badge = timed(lambda: client.get("/api/v1/notifications/unread-count", headers=headers))
        http_page = timed(lambda: client.get("/api/v1/notifications", headers=headers))
        # The usual inbox: most of it read, the newest 500 unread.
        keep = db.session.scalar(select(Notification.id).where(Notification.user_id == admin_id)
                                 .order_by(Notification.id.desc()).offset(500).limit(1))
        db.session.execute(text("UPDATE notifications SET read_at = now() WHERE user_id = :u"
                                " AND id <= :keep"), {"u": admin_id, "keep": keep})
        db.session.commit()
        vacuum()
        mostly_read = {"exact": timed(exact), "page": timed(first_page),
                       "unread_page": timed(first_page_unread)}
        unread_now = service.unread_count(admin_id)
    cap = app.config["NOTIFICATION_UNREAD_COUNT_CAP"]
    print(f"2. inbox of {owned:,} rows interleaved with others' (table: {total_rows:,} rows); "
          "median / p95")
    print(f"   all {owned:,} unread: badge (exact up to {cap:,}, then capped) "
          f"{all_unread['badge'][0]:.2f} / {all_unread['badge'][1]:.2f} ms "
          f"[target < 10 ms: {verdict(all_unread['badge'][0], 10)}]; "
          f"uncapped exact count {all_unread['exact'][0]:.2f} ms (for reference)")
    print(f"   first page (20) {all_unread['page'][0]:.2f} / {all_unread['page'][1]:.2f} ms "
          f"[target < 10 ms: {verdict(all_unread['page'][0], 10)}]; "
          f"first unread page {all_unread['unread_page'][0]:.2f} ms")
    print(f"   over HTTP (test client: JWT, JSON): badge {http_badge[0]:.2f} ms, "
          f"first page {http_page[0]:.2f} ms")
    print(f"   {unread_now:,} unread (the rest read): exact count {mostly_read['exact'][0]:.2f} / "
          f"{mostly_read['exact'][1]:.2f} ms [target < 10 ms: {verdict(mostly_read['exact'][0], 10)}]; "
          f"first page {mostly_read['page'][0]:.2f} ms; first unread page "
          f"{mostly_read['unread_page'][0]:.2f} ms")

    # ---- 3. mark-all-read on 10,000 rows -------------------------------------------------------
    with app.app_context():
        reader = db.session.scalar(select(User).where(User.role == "viewer").limit(1))
        db.session.execute(text(
            "INSERT INTO notifications (user_id, type, title, message, data, priority,"
            " digest_pending, delivered_at, created_at, updated_at)"
            " SELECT :u, 'episode:updated', 'Episode updated: X', 'm', '{}'::jsonb, 'normal',"
            " false, now(), now(), now() FROM generate_series(1, :n)"), {"u": reader.id, "n": MARK_ROWS})
        db.session.commit()
        vacuum()
        before = service.unread_count(reader.id)
        start = time.perf_counter()
        result = service.mark_all_read(reader)
        mark_ms = (time.perf_counter() - start) * 1000
    print(f"3. mark-all-read: {result['updated']:,} of {before:,} unread rows, one UPDATE + the new "
          f"badge + commit: {mark_ms:.1f} ms [target < 200 ms: {verdict(mark_ms, 200)}]")


if __name__ == "__main__":
    main()
