"""Timings the tests assert only as order and counts: cancel latency and a down broker.

    python bench/job_cancel.py [--runs 10] [--requests 20]

In process, on a fresh PostgreSQL database ``ec_bench_cancel`` (``BENCH_PG``), the
in-memory broker and no worker: jobs run through ``app.jobs.runner.run`` in a thread.

Prints:
- cancel: a running noop job with a 100 ms step is cancelled over REST; the time from the
  cancel response to the handler's exit (tests/test_job_processing.py and
  tests/test_job_worker.py assert "at most one checkpoint after the cancel"). Bare peer:
  one step of the handler; the ratio says how many steps a cancel costs.
- broker down: ``POST /episodes`` with the broker unreachable (one publish attempt, no
  retry; tests/test_pipeline.py) against the same request with a reachable broker.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

from _common import bench_editor, in_process_database, pct, python_speed

STEP_MS = 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    in_process_database(os.environ.get("BENCH_DB", "ec_bench_cancel"))

    from app import create_app
    from app.jobs import runner
    from config import DevelopmentConfig

    celery = {**DevelopmentConfig.celery(), "broker_url": "memory://"}
    app = create_app(DevelopmentConfig, CELERY=celery, RATELIMIT_ENABLED=False)
    headers = bench_editor(app, "bench-cancel@example.com")
    client = app.test_client()
    episode = client.post("/api/v1/episodes", headers=headers,
                          json={"title": "Bench", "episode_number": 1}).json["id"]

    cancel_ms: list[float] = []
    for _ in range(args.runs):
        job = client.post("/api/v1/jobs", headers=headers, json={
            "type": "noop", "episode_id": episode,
            "params": {"steps": 1000, "duration_ms": 1000 * STEP_MS}}).json
        outcome: dict = {}

        def work(job_id: int = job["id"], outcome: dict = outcome) -> None:
            with app.app_context():
                outcome["value"] = runner.run(job_id)

        thread = threading.Thread(target=work)
        thread.start()
        while client.get(f"/api/v1/jobs/{job['id']}", headers=headers).json["progress"] == 0:
            time.sleep(0.01)
        r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
        asked = time.perf_counter()
        assert r.status_code == 200, r.json
        thread.join(60)
        cancel_ms.append((time.perf_counter() - asked) * 1000)
        assert outcome["value"] == "cancelled", outcome

    def post_episode(target, n: int) -> float:
        start = time.perf_counter()
        r = target.post("/api/v1/episodes", headers=headers,
                        json={"title": f"Bench {n}", "episode_number": n})
        assert r.status_code == 201, r.json
        return (time.perf_counter() - start) * 1000

    down_app = create_app(DevelopmentConfig, RATELIMIT_ENABLED=False, CELERY={
        **celery, "broker_url": "redis://127.0.0.1:1/0"})
    down, up = down_app.test_client(), client
    timings: dict[str, list[float]] = {"broker down": [], "broker up": []}
    for n in range(args.requests * 2):
        label = "broker down" if n % 2 == 0 else "broker up"
        timings[label].append(post_episode(down if label == "broker down" else up, 100 + n))

    print(f"# {python_speed()}")
    print(f"cancel of a running noop job ({STEP_MS} ms steps), {args.runs} runs: cancel response "
          f"to handler exit p50 {statistics.median(cancel_ms):.1f} ms, "
          f"max {max(cancel_ms):.1f} ms; ratio to one step (p50): "
          f"{statistics.median(cancel_ms) / STEP_MS:.2f}")
    print(f"POST /episodes, {args.requests} each, interleaved")
    for label, values in timings.items():
        print(f"  {label:11} p50 {statistics.median(values):7.2f} ms  "
              f"p99 {pct(values, 99):7.2f} ms")
    ratio = statistics.median(timings["broker down"]) / statistics.median(timings["broker up"])
    print(f"  ratio down/up (p50): {ratio:.2f}")


if __name__ == "__main__":
    main()
