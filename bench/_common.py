"""Shared set-up for the benchmarks: a fresh PostgreSQL database, Redis, real processes."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
# The Redis server (no database number) the benchmarks use: on a shared machine, each
# person's own (pub/sub channels are global across database numbers).
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379").rstrip("/")


def fresh_database(name: str) -> str:
    """Drop and create ``name``; returns its URL."""
    drop_database(name)
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{PG}/{name}"


def setup_env(db_name: str, redis_db: int) -> dict:
    """Point this process (and its children) at a fresh database and a Redis database."""
    url = fresh_database(db_name)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": f"{REDIS}/{redis_db}",
        "APP_ENV": "development",
        "EMBEDDED_WORKER": "0",
        "INSTANCE_DIR": f"/tmp/{db_name}-instance",
        "STORAGE_DIR": f"/tmp/{db_name}-instance/files",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    return dict(os.environ)


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def in_process_database(name: str) -> str:
    """A fresh database ``name`` for a benchmark that runs the app in this process, with no
    Redis (tasks go to an in-memory broker); its URL."""
    url = fresh_database(name)
    os.environ.update({"DATABASE_URL": url, "REDIS_URL": "",
                       "INSTANCE_DIR": f"/tmp/{name}-instance",
                       "STORAGE_DIR": f"/tmp/{name}-instance/files"})
    return url


def bench_editor(app, email: str) -> dict:
    """Migrate ``app``'s database and create an editor: its ``Authorization`` header."""
    from flask_jwt_extended import create_access_token

    migrate(app)
    user_id = create_user(app, email)
    with app.app_context():
        return {"Authorization": f"Bearer {create_access_token(identity=user_id)}"}


def migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))


def create_user(app, email: str, *, role: str = "editor", name: str = "Bench") -> int:
    """A user row for a benchmark (password ``benchbench``); returns its id."""
    from app.extensions import db
    from app.models import User

    with app.app_context():
        user = User(email=email, name=name, role=role)
        user.set_password("benchbench")
        db.session.add(user)
        db.session.commit()
        return user.id


def start_worker(env: dict, concurrency: int, pool: str = "prefork", log: str = "/tmp/bench-worker.log",
                 loglevel: str = "WARNING"):
    out = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-l", loglevel,
         "-c", str(concurrency), "-P", pool, "--without-mingle", "--without-gossip",
         "-n", f"bench-{os.getpid()}-{time.time_ns()}@%h"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def wait_for_log(path: str, text: str, timeout: float, proc=None) -> bool:
    """Wait until ``text`` appears in the log file (False on timeout or if ``proc`` exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in Path(path).read_text(errors="replace"):
                return True
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def stop(proc) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except Exception:  # noqa: BLE001
        os.killpg(proc.pid, signal.SIGKILL)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def summary(values: list[float]) -> str:
    return (f"p50 {pct(values, 50):.2f} ms, p99 {pct(values, 99):.2f} ms, "
            f"mean {statistics.fmean(values):.2f} ms")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except FileNotFoundError:
            continue
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


def cpu_snapshot(groups: dict[str, tuple[int, str]]) -> dict[str, float]:
    """CPU seconds used so far by each named group, by PostgreSQL and by Redis.

    A group is ``(pid, "tree" | "self" | "children")``: the process with its descendants,
    the process alone, or its descendants alone. Server processes are found by their
    command name, so their figures include any other client: run on a quiet machine.
    """
    snap = {}
    for name, (pid, scope) in groups.items():
        pids = {"tree": [pid, *_descendants(pid)], "self": [pid],
                "children": _descendants(pid)}[scope]
        snap[name] = sum(_cpu_seconds(p) for p in pids)
    snap["postgres"] = snap["redis"] = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if comm.startswith("postgres"):
            snap["postgres"] += _cpu_seconds(int(entry.name))
        elif comm.startswith("redis-server"):
            snap["redis"] += _cpu_seconds(int(entry.name))
    snap["this process"] = sum(os.times()[:2])
    return snap


def cpu_per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> str:
    """``name a.b ms`` per item for each group, and the total."""
    parts = {name: (after[name] - before.get(name, 0.0)) * 1000 / items for name in after}
    total = sum(parts.values())
    return ", ".join(f"{name} {ms:.1f}" for name, ms in parts.items()) + f"; total {total:.1f} ms"


def round_trip_counts(db_url: str, redis_url: str) -> dict[str, float]:
    """Work counters of the servers: Redis commands, PostgreSQL transactions of the
    database and (with pg_stat_statements loaded) its statements. Take two and subtract."""
    import redis

    stats = redis.Redis.from_url(redis_url).info("commandstats")
    counts = {"redis commands": float(sum(v["calls"] for v in stats.values()))}
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        counts["pg transactions"] = float(conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (name,)).fetchone()[0])
        try:
            counts["pg statements"] = float(conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s", (name,)).fetchone()[0])
        except psycopg.Error:
            pass  # the extension is not loaded on this server
    return counts


def per_item(before: dict[str, float], after: dict[str, float], items: int) -> str:
    return ", ".join(f"{name} {(after[name] - before[name]) / items:.1f}"
                     for name in after if name in before)


def python_speed() -> str:
    """A yardstick printed with the figures: CPU seconds of a fixed pure-Python loop (best
    of 3). Machines of the same kind differ by 2-3x here, and so do the figures."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return f"3M-iteration Python loop {best:.2f} s"
