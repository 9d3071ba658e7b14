"""Limits benchmark: what the per-user job cap adds to ``POST /jobs``, and login timing for a
known and an unknown email (the dummy hash), in process on PostgreSQL.

    BENCH_DB=ec_bench_limits python bench/abuse_limits.py [--jobs 400] [--logins 20]

A fresh database ``BENCH_DB`` (dropped and created on ``BENCH_PG``), no Redis (eager
Celery off, tasks to an in-memory broker nobody consumes; after each create all but the
user's newest 10 jobs are marked completed, untimed: a steady state under the cap of 20).
Runs are interleaved (A, B, A, B, ...) so machine drift hits both:

- ``POST /jobs`` p50/p99 with the cap check (advisory lock + count) and with it replaced by
  a no-op; the ratio is what the cap costs a create;
- ``POST /auth/login`` with a wrong password for a known and an unknown email; the ratio
  should be ~1 (before the dummy hash, 4.7 ms against 125 ms).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_editor, drop_database, in_process_database, pct  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--logins", type=int, default=20)
    args = parser.parse_args()
    name = os.environ.get("BENCH_DB", "ec_bench_limits")
    in_process_database(name)

    from app import create_app
    from app.extensions import db
    from app.jobs import service as job_service
    from config import DevelopmentConfig

    celery = {**DevelopmentConfig.celery(), "broker_url": "memory://"}
    app = create_app(DevelopmentConfig, CELERY=celery, RATELIMIT_ENABLED=False)
    headers = bench_editor(app, "bench-limits@example.com")
    client = app.test_client()
    episode = client.post("/api/v1/episodes", headers=headers,
                          json={"title": "Bench", "episode_number": 1}).json["id"]

    from sqlalchemy import text

    def settle() -> None:
        """All but the newest 10 jobs completed: a steady state under the default cap (20)."""
        with app.app_context():
            db.session.execute(text(
                "UPDATE jobs SET status = 'completed' WHERE status = 'queued' AND id NOT IN "
                "(SELECT id FROM jobs ORDER BY id DESC LIMIT 10)"))
            db.session.commit()

    real_check = job_service._check_queue_cap
    timings: dict[str, list[float]] = {"with cap": [], "without": []}
    for n in range(args.jobs * 2):
        label = "with cap" if n % 2 == 0 else "without"
        job_service._check_queue_cap = real_check if label == "with cap" else (lambda _uid: None)
        start = time.perf_counter()
        r = client.post("/api/v1/jobs", headers=headers,
                        json={"type": "noop", "episode_id": episode})
        timings[label].append((time.perf_counter() - start) * 1000)
        assert r.status_code == 201, r.json
        settle()
    job_service._check_queue_cap = real_check
    print(f"POST /jobs, {args.jobs} each, interleaved, 10 of the user's jobs queued")
    for label, values in timings.items():
        print(f"  {label:9} p50 {statistics.median(values):6.2f} ms  p99 {pct(values, 99):6.2f} ms")
    ratio = statistics.median(timings["with cap"]) / statistics.median(timings["without"])
    print(f"  ratio with/without (p50): {ratio:.3f}")

    logins: dict[str, list[float]] = {"known email": [], "unknown email": []}
    for n in range(args.logins * 2):
        label = "known email" if n % 2 == 0 else "unknown email"
        email = "bench-limits@example.com" if label == "known email" else f"nobody{n}@example.com"
        start = time.perf_counter()
        r = client.post("/api/v1/auth/login", json={"email": email, "password": "wrong-one"})
        logins[label].append((time.perf_counter() - start) * 1000)
        assert r.status_code == 401
    print(f"POST /auth/login with a wrong password, {args.logins} each, interleaved")
    for label, values in logins.items():
        print(f"  {label:13} p50 {statistics.median(values):7.2f} ms")
    ratio = statistics.median(logins["unknown email"]) / statistics.median(logins["known email"])
    print(f"  ratio unknown/known (p50): {ratio:.3f}")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    drop_database(name)


if __name__ == "__main__":
    main()
