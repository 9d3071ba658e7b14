"""Metrics benchmark: what the Prometheus instrumentation adds to a request, on against off,
in process on PostgreSQL, and what a scrape of ``/metrics`` costs.

    BENCH_DB=ec_bench_metrics python bench/metrics_overhead.py [--requests 2000]

A fresh database ``BENCH_DB`` (dropped and created on ``BENCH_PG``), no Redis, tasks sent to
an in-memory broker nobody consumes. Multiprocess mode as deployed (files in a fresh
``PROMETHEUS_MULTIPROC_DIR``, the costlier storage) unless ``--in-memory``. Two apps, one
with ``METRICS_ENABLED`` off (no hooks, no /metrics); requests alternate (on, off, off, on,
...) so machine drift hits both. Per request kind: p50 and p99 on and off, and the p50 ratio.

- ``GET /api/v1/health/live``: a request that does nothing, so the bare hook cost;
- ``GET /api/v1/episodes/<id>``: a cheap authenticated read;
- ``PATCH /api/v1/episodes/<id>``: a write that records an event (counted at commit).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, in_process_database, pct  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per kind, per mode")
    parser.add_argument("--in-memory", action="store_true",
                        help="single-process storage instead of PROMETHEUS_MULTIPROC_DIR")
    args = parser.parse_args()
    prom_dir = None
    if not args.in_memory:
        prom_dir = tempfile.mkdtemp(prefix="ec-bench-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir  # before prometheus_client loads

    name = os.environ.get("BENCH_DB", "ec_bench_metrics")
    in_process_database(name)

    import logging

    from flask_jwt_extended import create_access_token
    from flask_migrate import upgrade

    from app import create_app, metrics
    from app.extensions import db
    from app.models import User
    from config import DevelopmentConfig

    overrides = dict(EMBEDDED_WORKER=False, RATELIMIT_ENABLED=False)
    off = create_app(DevelopmentConfig, METRICS_ENABLED=False, **overrides)
    on = create_app(DevelopmentConfig, METRICS_ENABLED=True, **overrides)
    logging.getLogger().setLevel(logging.WARNING)
    with on.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        user = User(email="bench@example.com", name="Bench", role="editor")
        user.set_password("benchbench")
        db.session.add(user)
        db.session.commit()
        token = create_access_token(identity=user.id)
    headers = {"Authorization": f"Bearer {token}"}
    episode_id = on.test_client().post("/api/v1/episodes", headers=headers,
                                       json={"title": "Bench", "episode_number": 1}).json["id"]
    kinds = {
        "GET /health/live": lambda c, n: c.get("/api/v1/health/live"),
        "GET /episodes/<id>": lambda c, n: c.get(f"/api/v1/episodes/{episode_id}", headers=headers),
        "PATCH /episodes/<id>": lambda c, n: c.patch(f"/api/v1/episodes/{episode_id}",
                                                     headers=headers, json={"title": f"T{n}"}),
    }
    times: dict[tuple[str, bool], list[float]] = {(k, m): [] for k in kinds for m in (True, False)}
    clients = {True: on.test_client(), False: off.test_client()}
    for call in kinds.values():  # warm-up, untimed
        for mode in (True, False):
            metrics._enabled = mode
            for n in range(50):
                call(clients[mode], n)
    # Alternate on and off request by request (the order swapping each time): the machine's
    # drift and neighbours' load then hit both modes alike.
    for kind, call in kinds.items():
        for n in range(args.requests):
            for mode in ((True, False) if n % 2 else (False, True)):
                metrics._enabled = mode  # the event hooks follow the app under test
                start = time.perf_counter()
                r = call(clients[mode], n)
                times[(kind, mode)].append(time.perf_counter() - start)
                assert r.status_code < 400, (kind, r.status_code)
    metrics._enabled = True
    storage = "in-memory" if args.in_memory else "multiprocess files"
    print(f"metrics overhead ({storage}; {args.requests} requests per kind and mode, "
          "on and off alternating)")
    for kind in kinds:
        on_t, off_t = times[(kind, True)], times[(kind, False)]
        print(f"  {kind:22s} on p50 {pct(on_t, 50) * 1e3:7.3f} ms p99 {pct(on_t, 99) * 1e3:7.3f} ms"
              f" | off p50 {pct(off_t, 50) * 1e3:7.3f} ms p99 {pct(off_t, 99) * 1e3:7.3f} ms"
              f" | ratio p50 {pct(on_t, 50) / pct(off_t, 50):.3f}")
    scrapes = []
    scraper = on.test_client()
    for _ in range(50):
        start = time.perf_counter()
        assert scraper.get("/metrics").status_code == 200
        scrapes.append(time.perf_counter() - start)
    print(f"  GET /metrics           p50 {pct(scrapes, 50) * 1e3:7.3f} ms "
          f"p99 {pct(scrapes, 99) * 1e3:7.3f} ms "
          f"({len(scraper.get('/metrics').data)} bytes)")
    if prom_dir:
        shutil.rmtree(prom_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
