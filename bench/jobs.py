"""Job processing benchmark: no-op jobs through the whole path, PostgreSQL + Redis.

    python bench/jobs.py [--jobs 2000] [--idle-jobs 200] [--clients 8] [--concurrency 2]

Real processes, as deployed: ``python wsgi.py`` (web + Socket.IO), ``celery -A celery_app
worker -c 2`` (two worker processes), a fresh database ``ec_bench_jobs`` and Redis db 13.
Each job is created over REST and counts as done when its ``job_completed`` event reaches
a Socket.IO client subscribed to the episode on ``/jobs``.

Prints:
- idle queue: one job at a time; queue-to-start latency (``started_at - created_at``,
  both stamped by the server) and create → ``job_completed``-at-client round trip;
- throughput: N jobs created by C concurrent REST clients; jobs/s from the first request
  to the last ``job_completed`` at the client, and queue-to-start latency under that load.
Targets (issue 6): ≥ 200 jobs/s; p99 queue-to-start < 100 ms with an idle queue.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time

import requests
import socketio
from _common import (
    ROOT,
    cpu_per_item_ms,
    cpu_snapshot,
    create_user,
    migrate,
    pct,
    per_item,
    python_speed,
    round_trip_counts,
    setup_env,
    start_worker,
    stop,
    summary,
    wait_for_log,
)

PORT = 5123


def start_web(env: dict, async_mode: str, log: str = "/tmp/bench-jobs-web.log"):
    out = open(log, "wb")
    return subprocess.Popen(
        [sys.executable, "wsgi.py"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        env={**env, "HOST": "127.0.0.1", "PORT": str(PORT), "SOCKETIO_ASYNC_MODE": async_mode},
        start_new_session=True)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


class Listener:
    """The client at the end of the path: /jobs, subscribed to the bench episode."""

    def __init__(self, url: str, token: str):
        self.completed: dict[int, float] = {}
        self.processor_started = threading.Event()
        self.cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("job_completed", self._completed, namespace="/jobs")
        self.sio.on("job_processor_started", lambda _d: self.processor_started.set(),
                    namespace="/jobs")
        self.sio.connect(url, namespaces=["/jobs"], auth={"token": token},
                         transports=["websocket"], wait_timeout=10)

    def _completed(self, envelope: dict) -> None:
        now = time.perf_counter()
        with self.cond:
            self.completed.setdefault(envelope["data"]["job_id"], now)
            self.cond.notify_all()

    def wait(self, job_ids, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(j in self.completed for j in job_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def start_latencies_ms(env: dict, job_ids: list[int]) -> list[float]:
    import psycopg

    url = env["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM (started_at - created_at)) * 1000 FROM jobs "
            "WHERE id = ANY(%s) AND started_at IS NOT NULL", (job_ids,)).fetchall()
    return [float(r[0]) for r in rows]


def finish_span_s(env: dict, job_ids: list[int]) -> float:
    """First created_at to last finished_at of these jobs (the server's view of the run)."""
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM (MAX(finished_at) - MIN(created_at))) "
                           "FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchone()
    return float(row[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--idle-jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--async-mode", default="eventlet")  # the production server
    args = parser.parse_args()
    env = setup_env("ec_bench_jobs", 13)
    env["JWT_ACCESS_TOKEN_SECONDS"] = "7200"
    # One user floods the queue on purpose: the per-user cap (20) would refuse most jobs.
    env["MAX_QUEUED_JOBS_PER_USER"] = str(10**9)

    from app import create_app

    app = create_app()
    migrate(app)
    create_user(app, "bench-jobs@example.com")

    web = start_web(env, args.async_mode)
    worker = None
    listener = None
    try:
        base = f"http://127.0.0.1:{PORT}"
        wait_http(f"{base}/api/v1/health")
        api = f"{base}/api/v1"
        token = requests.post(f"{api}/auth/login", timeout=10, json={
            "email": "bench-jobs@example.com", "password": "benchbench"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        episode_id = requests.post(f"{api}/episodes", headers=headers, timeout=10, json={
            "title": "Bench", "episode_number": 1}).json()["id"]
        listener = Listener(base, token)
        assert listener.sio.call("subscribe", {"episode_id": episode_id}, namespace="/jobs")["ok"]

        log = "/tmp/bench-jobs-worker.log"
        worker = start_worker(env, args.concurrency, log=log, loglevel="INFO")
        if not wait_for_log(log, "ready.", 60, worker):
            raise SystemExit(open(log).read()[-3000:])
        if not listener.processor_started.wait(30):
            raise SystemExit("job_processor_started never reached the client")
        print(f"{os.cpu_count()} CPUs; worker -c {args.concurrency}; web {args.async_mode}; "
              f"{args.clients} REST clients; {python_speed()}")

        session = requests.Session()

        def create() -> int:
            r = session.post(f"{api}/jobs", headers=headers, timeout=30,
                             json={"type": "noop", "episode_id": episode_id})
            r.raise_for_status()
            return r.json()["id"]

        # Warm-up: connections, imports, caches.
        warm = [create() for _ in range(20)]
        if not listener.wait(warm, 60):
            raise SystemExit("warm-up jobs did not complete")

        # 1. Idle queue: one job at a time.
        idle_ids, round_trips = [], []
        for _ in range(args.idle_jobs):
            t = time.perf_counter()
            job_id = create()
            if not listener.wait([job_id], 30):
                raise SystemExit(f"job {job_id} did not complete")
            round_trips.append((listener.completed[job_id] - t) * 1000)
            idle_ids.append(job_id)
            time.sleep(0.01)
        idle_start = start_latencies_ms(env, idle_ids)
        print(f"idle queue, {args.idle_jobs} jobs one at a time:")
        print(f"  queue-to-start latency: {summary(idle_start)}  (target p99 < 100 ms)")
        print(f"  create -> job_completed at the client: {summary(round_trips)}")

        # 2. Throughput: C clients create N jobs as fast as they can.
        ids: list[int] = []
        lock = threading.Lock()
        per_client = args.jobs // args.clients

        body = json.dumps({"type": "noop", "episode_id": episode_id})
        post_headers = {**headers, "Content-Type": "application/json"}

        def producer() -> None:
            # http.client on one keep-alive connection: the load generator shares the 2
            # cores with the servers, and requests costs several times its CPU per call.
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
            mine = []
            for _ in range(per_client):
                conn.request("POST", "/api/v1/jobs", body=body, headers=post_headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 201:
                    raise SystemExit(f"POST /jobs: {response.status} {data[:300]!r}")
                mine.append(json.loads(data)["id"])
            conn.close()
            with lock:
                ids.extend(mine)

        threads = [threading.Thread(target=producer) for _ in range(args.clients)]
        groups = {"web": (web.pid, "tree"), "worker main": (worker.pid, "self"),
                  "worker pool": (worker.pid, "children")}
        cpu_before = cpu_snapshot(groups)
        work_before = round_trip_counts(env["DATABASE_URL"], env["REDIS_URL"])
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created = time.perf_counter() - t0
        if not listener.wait(ids, 600):
            missing = [j for j in ids if j not in listener.completed]
            raise SystemExit(f"{len(missing)} jobs never reported completed, e.g. {missing[:5]}")
        cpu_after = cpu_snapshot(groups)
        work_after = round_trip_counts(env["DATABASE_URL"], env["REDIS_URL"])
        last = max(listener.completed[j] for j in ids)
        elapsed = last - t0
        busy_start = start_latencies_ms(env, ids)
        span = finish_span_s(env, ids)
        print(f"throughput, {len(ids)} jobs from {args.clients} clients:")
        print(f"  created over REST in {created:.2f} s ({len(ids) / created:.0f} requests/s)")
        print(f"  all job_completed at the client after {elapsed:.2f} s: "
              f"{len(ids) / elapsed:.0f} jobs/s  (target >= 200)")
        print(f"  server side, first created_at to last finished_at: {span:.2f} s "
              f"({len(ids) / span:.0f} jobs/s)")
        print(f"  queue-to-start latency under load: {summary(busy_start)}")
        print(f"  max queue-to-start under load: {pct(busy_start, 100):.0f} ms")
        print(f"  CPU per job, ms: {cpu_per_item_ms(cpu_before, cpu_after, len(ids))}")
        cpu_ms = sum(after - cpu_before.get(name, 0.0) for name, after in cpu_after.items())
        cpu_ms = cpu_ms * 1000 / len(ids)
        cores = os.cpu_count() or 1
        print(f"  CPU-bound ceiling here: {cores} cores / {cpu_ms:.1f} ms per job = "
              f"{cores * 1000 / cpu_ms:.0f} jobs/s; 200 jobs/s needs <= {cores * 1000 / 200:.1f} ms")
        print(f"  server work per job: {per_item(work_before, work_after, len(ids))}")
    finally:
        if listener is not None:
            listener.sio.disconnect()
        if worker is not None:
            stop(worker)
        stop(web)


if __name__ == "__main__":
    main()
