"""Real processes for end-to-end tests: a Celery worker and a web server (``python wsgi.py``).

They run on the same database and Redis as the test run, from the repository root, with
the same commands a deployment uses.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.conftest import RUN_DIR, _Config
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = RUN_DIR / "logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict:
    """Environment for a subprocess that shares this test run's database and Redis."""
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": _Config.SQLALCHEMY_DATABASE_URI,
        "INSTANCE_DIR": str(RUN_DIR / "instance"),
        "STORAGE_DIR": _Config.STORAGE_DIR,
        "APP_ENV": "development",
        "EMBEDDED_WORKER": "0",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    if _Config.REDIS_URL:
        env["REDIS_URL"] = _Config.REDIS_URL
    env.update(extra)
    return env


def _log_file(kind: str) -> Path:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return LOG_DIR / f"{kind}-{uuid.uuid4().hex[:8]}.log"


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str, log: Path) -> None:
    wait_for(predicate, timeout, 0.1, f"{what} to start",
             describe=lambda: f"log:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process group: the signal first, SIGKILL if it does not go."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class Worker:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children): no clean shutdown."""
        stop(self.proc, sig=signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def celery_worker(*, concurrency: int = 2, pool: str = "prefork", queues: str | None = None,
                  **env: str) -> Iterator[Worker]:
    """``celery -A celery_app worker`` as a real process on the Redis broker.

    ``queues`` is the worker's ``-Q`` (README: "events,notifications,maintenance" and
    "jobs"); without it the worker serves every queue, as a plain command does.
    """
    log = _log_file("worker")
    select = ["-Q", queues] if queues else []
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-l", "INFO",
             "-c", str(concurrency), "-P", pool, "-n", f"test-{uuid.uuid4().hex[:6]}@%h",
             "--without-mingle", "--without-gossip", *select],
            cwd=ROOT, env=service_env(**env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, log)
    try:
        _wait_for(lambda: "ready." in log.read_text() or proc.poll() is not None, 60,
                  "celery worker", log)
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{log.read_text()[-4000:]}")
        yield worker
    finally:
        stop(proc)


@contextmanager
def celery_beat(**env: str) -> Iterator[Worker]:
    """``celery -A celery_app beat`` as a real process, with its own schedule file."""
    log = _log_file("beat")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "-l", "INFO",
             "-s", str(LOG_DIR / f"schedule-{uuid.uuid4().hex[:8]}"), "--max-interval", "1"],
            cwd=ROOT, env=service_env(**env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    beat = Worker(proc, log)
    try:
        _wait_for(lambda: "beat: Starting" in log.read_text() or proc.poll() is not None, 60,
                  "celery beat", log)
        if proc.poll() is not None:
            raise RuntimeError(f"celery beat exited:\n{log.read_text()[-4000:]}")
        yield beat
    finally:
        stop(proc)


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def web_server(*, async_mode: str = "threading", port: int | None = None,
               **env: str) -> Iterator[Server]:
    """``python wsgi.py`` on ``port`` (a free one by default); yields its base URL once
    /health answers."""
    port = port or free_port()
    log = _log_file("web")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "wsgi.py"], cwd=ROOT,
            env=service_env(HOST="127.0.0.1", PORT=str(port), SOCKETIO_ASYNC_MODE=async_mode,
                            **env),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return requests.get(f"{url}/api/v1/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_for(up, 60, "web server", log)
        if proc.poll() is not None:
            raise RuntimeError(f"web server exited:\n{log.read_text()[-4000:]}")
        yield Server(proc, url, log)
    finally:
        stop(proc)
