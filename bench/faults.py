"""What a Redis outage costs a request: Redis up, stalled (SIGSTOP), dead (SIGKILL).

    python bench/faults.py [--requests 100] [--stalled-requests 30]

A real ``python wsgi.py`` (eventlet) on a fresh PostgreSQL database and a throwaway
``redis-server``; one client alternates ``GET /auth/me`` (the token check: blocklist and
user cache) and ``POST /episodes`` (a write that enqueues its event's delivery). Run with
the circuit breaker on (``REDIS_RETRY_SECONDS=2``, the default) and off (0: every request
tries Redis). Prints p50/p99/max latency and the number of 5xx per phase, and the ratio of
each phase's p50 to the same run's "up" p50. A stalled Redis accepts connections but never
answers (a hung host): there the timeouts and the breaker decide; a dead one refuses at
once. No worker runs: events wait in the outbox.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import requests
from _common import ROOT, create_user, migrate, pct, setup_env, stop, wait_for_log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def run_phase(session: requests.Session, url: str, n: int) -> tuple[list[float], int]:
    latencies, errors = [], 0
    for i in range(n):
        started = time.perf_counter()
        if i % 2:
            r = session.post(f"{url}/api/v1/episodes", json={"title": f"B {i}", "episode_number": i},
                             timeout=60)
        else:
            r = session.get(f"{url}/api/v1/auth/me", timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        errors += r.status_code >= 500
    return latencies, errors


def line(name: str, values: list[float], errors: int, base: float | None) -> str:
    ratio = f", p50 {pct(values, 50) / base:.1f}x up" if base else ""
    return (f"  {name:8} p50 {pct(values, 50):7.2f} ms, p99 {pct(values, 99):7.2f} ms, "
            f"max {max(values):7.2f} ms, 5xx {errors}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--stalled-requests", type=int, default=30)
    args = parser.parse_args()
    env = setup_env("ec_bench_faults", 13)
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env.update(REDIS_URL=redis_url, SOCKETIO_MESSAGE_QUEUE=redis_url, SOCKETIO_ASYNC_MODE="eventlet")
    os.environ.update(REDIS_URL=redis_url)

    from flask_jwt_extended import create_access_token

    from app import create_app

    redis_proc = start_redis(redis_port)
    app = create_app()
    migrate(app)
    user_id = create_user(app, "faults@example.com")
    with app.app_context():
        token = create_access_token(identity=user_id, expires_delta=False)
    for retry_seconds in ("2", "0"):
        port = free_port()
        log = f"/tmp/bench-faults-web-{retry_seconds}.log"
        web_env = dict(env, HOST="127.0.0.1", PORT=str(port), REDIS_RETRY_SECONDS=retry_seconds)
        with open(log, "wb") as out:
            web = subprocess.Popen([sys.executable, "wsgi.py"], cwd=ROOT, env=web_env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not wait_for_log(log, "serving on", 60, web):
                raise RuntimeError(open(log).read()[-3000:])
            url = f"http://127.0.0.1:{port}"
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            run_phase(session, url, 20)  # warm up
            breaker = "on" if retry_seconds != "0" else "off"
            print(f"breaker {breaker} (REDIS_RETRY_SECONDS={retry_seconds}):")
            up, errors = run_phase(session, url, args.requests)
            base = pct(up, 50)
            print(line("up", up, errors, None))
            redis_proc.send_signal(signal.SIGSTOP)
            try:
                stalled, errors = run_phase(session, url, args.stalled_requests)
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            print(line("stalled", stalled, errors, base))
            redis_proc.kill()
            redis_proc.wait()
            dead, errors = run_phase(session, url, args.requests)
            print(line("dead", dead, errors, base))
            redis_proc = start_redis(redis_port)
            time.sleep(1)
            back, errors = run_phase(session, url, args.requests)
            print(line("back", back, errors, base))
        finally:
            stop(web)
    redis_proc.kill()


if __name__ == "__main__":
    main()
