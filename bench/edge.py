"""What the edge costs per request: nosniff middleware and Flask-CORS, against no edge at all.

    .venv/bin/python bench/edge.py

In process (Flask test client), a request that routing answers (404 with a JSON error) and
that carries an ``Origin``, so the CORS code runs; no database. Four apps side by side,
interleaved in short rounds so machine noise hits all alike: bare (no ``init_edge``), the
edge with same-origin CORS (production default: middleware only), with ``*`` and with a
list of origins. Prints the minimum and the median of the rounds, microseconds per request.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app, security  # noqa: E402
from config import TestConfig  # noqa: E402

ROUNDS, PER_ROUND = 30, 500


class _Config(TestConfig):
    SQLALCHEMY_DATABASE_URI = f"sqlite:///{tempfile.mkdtemp(prefix='ec-bench-')}/edge.db"


def build(*, edge: bool, cors: str):
    original = security.init_edge
    if not edge:
        security.init_edge = lambda app: None  # create_app imports it at call time
    try:
        return create_app(_Config, CORS_ORIGINS=cors)
    finally:
        security.init_edge = original


def main() -> None:
    apps = {
        "bare": build(edge=False, cors="*"),
        "edge, same origin": build(edge=True, cors=""),
        "edge, CORS *": build(edge=True, cors="*"),
        "edge, CORS list": build(edge=True, cors="https://a.example, https://x.example"),
    }
    clients = {name: app.test_client() for name, app in apps.items()}
    headers = {"Origin": "https://x.example"}
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(ROUNDS):
        for name, client in clients.items():
            start = time.perf_counter()
            for _ in range(PER_ROUND):
                client.get("/api/v1/no-such-route", headers=headers)
            times[name].append((time.perf_counter() - start) / PER_ROUND * 1e6)
    bare = min(times["bare"])
    for name, values in times.items():
        print(f"{name:18s} min {min(values):6.1f} us  median {statistics.median(values):6.1f} us"
              f"  (min {min(values) / bare:.2f}x bare)")


if __name__ == "__main__":
    main()
