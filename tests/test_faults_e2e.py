"""Faults end to end: real ``python wsgi.py`` (eventlet) and Celery worker processes while a
throwaway Redis or PostgreSQL server (``tests/services.py``) is killed and started again.

No process is restarted: each must find its way back by itself. Every wait is bounded
polling; nothing here measures time.
"""
from __future__ import annotations

import queue
from collections import Counter

import pytest
import requests
import socketio as sio_client
from flask_jwt_extended import create_access_token
from flask_migrate import upgrade
from sqlalchemy import func, select

from app.extensions import db
from app.models import ActivityLog, DomainEvent, Episode, User
from tests.conftest import _Config
from tests.helpers import wait_for
from tests.processes import celery_worker, web_server
from tests.services import have_redis_server, postgres_bin, postgres_cluster, redis_server

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not have_redis_server(), reason="redis-server not installed"),
]


class Writer:
    """Creates episodes one after the other over HTTP, keeping every answer."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.answers: list[requests.Response] = []
        self.n = 0

    def create(self) -> requests.Response:
        self.n += 1
        r = self.session.post(f"{self.url}/api/v1/episodes", timeout=30,
                              json={"title": f"Fault {self.n}", "episode_number": self.n})
        self.answers.append(r)
        return r

    def created_ids(self) -> list[int]:
        return [r.json()["id"] for r in self.answers if r.status_code == 201]

    def statuses(self) -> Counter:
        return Counter(r.status_code for r in self.answers)


class Listener:
    """A Socket.IO client on /episodes that keeps the ids of the episodes it hears about."""

    def __init__(self, url: str, token: str):
        self.created: queue.Queue = queue.Queue()
        self.sio = sio_client.Client(reconnection=False)
        self.resyncs: list[dict] = []
        self.sio.on("episode_created", lambda data: self.created.put(data["data"]["episode_id"]),
                    namespace="/episodes")
        self.sio.on("resync_required", self.resyncs.append, namespace="/episodes")
        self.sio.connect(url, namespaces=["/episodes"], auth={"token": token},
                         transports=["websocket"], wait_timeout=15)
        self.seen: set[int] = set()

    def heard(self) -> set[int]:
        while True:
            try:
                self.seen.add(self.created.get_nowait())
            except queue.Empty:
                return self.seen

    def close(self) -> None:
        self.sio.disconnect()


def _editor(app) -> tuple[int, str]:
    with app.app_context():
        user = User(email="faults@example.com", name="Fault Finder", role="editor")
        user.set_password("password123")
        db.session.add(user)
        db.session.commit()
        return user.id, create_access_token(identity=user.id)


def _delivered_once(app, episode_ids: list[int]) -> bool:
    """Every created episode has exactly one ``created`` activity row, and nothing else."""
    with app.app_context():
        rows = db.session.execute(select(ActivityLog.resource_id, func.count())
                                  .where(ActivityLog.action == "created",
                                         ActivityLog.resource_type == "episode")
                                  .group_by(ActivityLog.resource_id)).all()
        db.session.rollback()
    counts = dict(rows)
    return sorted(counts) == sorted(episode_ids) and all(c == 1 for c in counts.values())


def _health(url: str) -> dict:
    r = requests.get(f"{url}/api/v1/health", timeout=30)
    return {"code": r.status_code, **r.json(), "retry_after": r.headers.get("Retry-After")}


def test_redis_restart_under_writes_no_5xx_and_each_event_once(app):
    """The issue's scenario: creates stream on while the worker is SIGKILLed and Redis is
    killed and started again (empty). A new worker comes up; the web process stays."""
    _user_id, token = _editor(app)
    with redis_server() as redis_srv:
        env = {"REDIS_URL": redis_srv.url, "SOCKETIO_MESSAGE_QUEUE": redis_srv.url}
        with web_server(async_mode="eventlet", **env) as web:
            listener = Listener(web.url, token)
            writer = Writer(web.url, token)
            try:
                with celery_worker(concurrency=2, **env) as first:
                    for _ in range(15):
                        writer.create()
                    first.kill()  # SIGKILL, possibly mid-batch: nothing acknowledged
                    redis_srv.kill()
                    for _ in range(15):
                        writer.create()
                health = _health(web.url)
                assert health["code"] == 200 and health["status"] == "degraded", health
                assert health["redis"] == "unavailable" and health["database"] == "ok"
                assert health["broker"] == "unavailable"
                redis_srv.start()  # empty: no keys, no queued tasks, no drain flag
                after = len(writer.answers)
                with celery_worker(concurrency=2, **env):
                    # The web process hears the message queue again: an episode created
                    # now reaches the socket that stayed connected through the outage.
                    def heard_one_created_after_restart() -> bool:
                        writer.create()
                        return bool(listener.heard() & set(writer.created_ids()[after:]))

                    wait_for(heard_one_created_after_restart, 90, 0.2,
                               "an episode_created through the restarted Redis")
                    # What was published before it subscribed again is gone: it says so.
                    assert listener.resyncs and all(r["data"]["reason"] == "message_queue_reconnected"
                                                    for r in listener.resyncs), listener.resyncs
                    for _ in range(5):
                        writer.create()
                    assert set(writer.statuses()) == {201}, writer.statuses()
                    wait_for(lambda: _health(web.url)["status"] == "ok", 60, 0.5, "health ok")
                    # Events committed while Redis was down (or whose delivery the kill cut
                    # short) waited in the outbox; the first wake-up after it came back
                    # delivered them. Each exactly once.
                    ids = writer.created_ids()
                    wait_for(lambda: _delivered_once(app, ids), 90, 0.5,
                               "every event delivered once")
            finally:
                listener.close()


@pytest.fixture(scope="module")
def pg_cluster():
    """A throwaway PostgreSQL cluster for this module, migrated to the current schema."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    with postgres_cluster() as cluster:
        yield cluster


def _cluster_app(cluster, redis_url: str):
    from app import create_app

    class ClusterConfig(_Config):
        SQLALCHEMY_DATABASE_URI = cluster.url
        REDIS_URL = redis_url

    app = create_app(ClusterConfig)
    with app.app_context():
        upgrade()
    return app


def test_postgres_stopped_and_started_503_then_recovery_nothing_lost(pg_cluster):
    with redis_server() as redis_srv:
        app = _cluster_app(pg_cluster, redis_srv.url)
        _user_id, token = _editor(app)
        env = {"REDIS_URL": redis_srv.url, "SOCKETIO_MESSAGE_QUEUE": redis_srv.url,
               "DATABASE_URL": pg_cluster.url, "DB_RETRY_AFTER_SECONDS": "3"}
        try:
            with celery_worker(concurrency=2, **env), web_server(async_mode="eventlet", **env) as web:
                writer = Writer(web.url, token)
                for _ in range(10):
                    assert writer.create().status_code == 201
                pg_cluster.stop()
                unavailable = [writer.create() for _ in range(10)]
                for r in unavailable:
                    assert r.status_code == 503, r.text
                    assert r.headers["Retry-After"] == "3"
                    assert r.json()["error"]["code"] == "database_unavailable"
                health = _health(web.url)
                assert health["code"] == 503 and health["status"] == "unavailable", health
                assert health["database"] == "unavailable" and health["retry_after"] == "3"
                # A socket connect is refused with a code the client can act on.
                refused: list = []
                sio = sio_client.Client(reconnection=False)
                sio.on("connect_error", refused.append, namespace="/episodes")
                with pytest.raises(sio_client.exceptions.ConnectionError):
                    sio.connect(web.url, namespaces=["/episodes"], auth={"token": token},
                                transports=["websocket"], wait_timeout=15)
                assert refused and refused[0]["data"]["code"] == "database_unavailable", refused
                pg_cluster.start()
                with app.app_context():
                    db.engine.dispose()  # this test's own pool (not under test) held dead connections

                # Same processes: their pools replace the dead connections by themselves.
                wait_for(lambda: writer.create().status_code == 201, 60, 0.2,
                           "a create to succeed again")
                for _ in range(10):
                    assert writer.create().status_code == 201
                assert set(writer.statuses()) <= {201, 503}, writer.statuses()
                ids = writer.created_ids()
                wait_for(lambda: _delivered_once(app, ids), 90, 0.5, "every event delivered once")
                with app.app_context():
                    # Nothing half-written: every episode row is one the API answered 201 for.
                    assert sorted(db.session.scalars(select(Episode.id))) == sorted(ids)
                    assert db.session.scalar(select(func.count()).select_from(DomainEvent)
                                             .where(DomainEvent.delivered_at.is_(None))) == 0
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def _outbox_waiting(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(DomainEvent)
                                  .where(DomainEvent.delivered_at.is_(None)))
        db.session.rollback()
        return count


def test_a_poison_event_does_not_hold_up_the_others(app, editor):
    """An event that fails every time (corrupt routing data) is set aside; the rest flow."""
    from app.services import episodes, events

    celery = app.extensions["celery"]
    celery.conf.task_always_eager = False  # the real broker and a real worker process
    celery.control.purge()
    with app.app_context():
        poison = events.record("poison_test", action="", actor=None, resource_type="system",
                               resource_id=None, payload={"_rooms": 5})  # not a list of routes
        db.session.commit()
        user = db.session.get(User, editor.id)
        first = [episodes.create_episode(user, {"title": f"After poison {n}", "episode_number": n}).id
                 for n in range(20)]
    with celery_worker(concurrency=2):
        wait_for(lambda: _delivered_once(app, first), 60, 0.2, "the events behind the poison")
        with app.app_context():
            user = db.session.get(User, editor.id)
            later = [episodes.create_episode(user, {"title": f"Later {n}", "episode_number": n}).id
                     for n in range(10)]
        wait_for(lambda: _delivered_once(app, first + later), 60, 0.2, "the later events")
    with app.app_context():
        event = db.session.get(DomainEvent, poison.id)
        assert event.delivered_at is None and event.attempts >= 1
        assert "TypeError" in event.last_error and event.next_attempt_at is not None
    assert _outbox_waiting(app) == 1  # only the poison


def test_two_beats_at_once_duplicate_no_effect(app, client, admin, editor):
    """Two ``celery beat`` processes (a botched deploy) fire every periodic task twice: the
    outbox sweep re-enqueues the same events, the digest task runs for the same user. Each
    event is still delivered once, and the digest is mailed once."""
    from aiosmtpd.controller import Controller

    from app.models import Notification
    from tests.processes import celery_beat, free_port
    from tests.test_notifications import SmtpSink, quiet_now, send, set_prefs
    from tests.test_pipeline import _undeliverable_app

    # A digest waiting for the beat: held by quiet hours (delivered in-process, eagerly).
    set_prefs(client, editor, quiet_hours=quiet_now("UTC"), digest_frequency="hourly")
    send(client, admin, user_ids=[editor.id], title="For the digest")
    with app.app_context():
        assert db.session.scalar(select(Notification.digest_pending)) is True
    # Events waiting in the outbox: created while the broker was down, enqueued nowhere.
    down = _undeliverable_app().test_client()
    ids = []
    for n in range(10):
        r = down.post("/api/v1/episodes", headers=editor.headers,
                      json={"title": f"Swept {n}", "episode_number": n})
        assert r.status_code == 201
        ids.append(r.json["id"])
    assert _outbox_waiting(app) == 10

    app.extensions["celery"].control.purge()
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = {"BEAT_INTERVAL_SCALE": "0.01",  # re-delivery sweep every 0.3 s, digests every 3 s
           "EVENT_REDELIVERY_GRACE_SECONDS": "0", "MAIL_SERVER": "127.0.0.1",
           "MAIL_PORT": str(smtp.port), "MAIL_FROM": "ec@example.com"}
    try:
        with celery_worker(concurrency=2, **env) as worker, \
                celery_beat(**env) as beat_a, celery_beat(**env) as beat_b:
            def digest_runs(beat) -> int:
                return beat.output().count("(workers.notifications.send_digests)")

            # Both beats have sent the digest task at least twice, and the worker ran them.
            wait_for(lambda: digest_runs(beat_a) >= 2 and digest_runs(beat_b) >= 2, 90, 0.5,
                       "both beats to send the digest task twice")
            wait_for(lambda: worker.output().count("send_digests[") >= 8, 60, 0.5,
                       "the worker to run the four digest tasks")  # received + succeeded
            wait_for(lambda: _delivered_once(app, ids), 60, 0.5, "the swept events, once each")
    finally:
        smtp.stop()
    assert len(sink.messages) == 1, [m["Subject"] for m in sink.messages]
    assert "For the digest" in sink.messages[0].get_payload()
    assert _outbox_waiting(app) == 0


def test_a_worker_holding_an_unacked_task_survives_redis_going_away(app, editor):
    """Redis dies while the worker runs an ``acks_late`` task (a job): Celery then restores
    and acknowledges through a detached channel. Without ``app/broker_fixes.py`` that raised
    AttributeError and the worker died ("Unrecoverable error"); here it reconnects."""
    from config import TestConfig
    from tests.conftest import make_test_app

    with redis_server() as redis_srv:
        celery = TestConfig.celery() | {"broker_url": redis_srv.url, "task_always_eager": False}
        live = make_test_app(REDIS_URL=redis_srv.url, CELERY=celery)
        client = live.test_client()
        env = {"REDIS_URL": redis_srv.url, "SOCKETIO_MESSAGE_QUEUE": redis_srv.url,
               "JOB_PROGRESS_INTERVAL_SECONDS": "0"}
        with celery_worker(concurrency=1, **env) as worker:
            r = client.post("/api/v1/episodes", headers=editor.headers,
                            json={"title": "Long job", "episode_number": 1})
            episode_id = r.json["id"]
            r = client.post("/api/v1/jobs", headers=editor.headers,
                            json={"type": "noop", "episode_id": episode_id,
                                  "params": {"duration_ms": 3000, "steps": 6}})
            assert r.status_code == 201, r.json
            job_id = r.json["id"]

            def job_status() -> str:
                return client.get(f"/api/v1/jobs/{job_id}", headers=editor.headers).json["status"]

            wait_for(lambda: job_status() == "running", 60, 0.05, "the job to start")
            redis_srv.kill()  # the job's message is unacknowledged right now
            wait_for(lambda: "Connection to broker lost" in worker.output(), 30, 0.1,
                       "the worker to notice")
            redis_srv.start()
            wait_for(lambda: job_status() == "completed", 60, 0.2, "the job to complete")
            # Still the same worker process, consuming again: a new event is delivered.
            r = client.post("/api/v1/episodes", headers=editor.headers,
                            json={"title": "After", "episode_number": 2})
            ids = [episode_id, r.json["id"]]
            wait_for(lambda: _delivered_once(app, ids), 60, 0.2, "delivery by the same worker")
            assert worker.proc.poll() is None, worker.output()[-3000:]
            assert "Unrecoverable error" not in worker.output()
