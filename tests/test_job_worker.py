"""Jobs end to end: a real ``celery worker`` on Redis, a real web server, a real /jobs client.

The test app enqueues to the same Redis broker (eager off), so ``POST /jobs`` here is
picked up by the worker process exactly as in production.
"""
from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
import socketio
from sqlalchemy import select

from app.extensions import db
from app.models import DomainEvent
from tests.processes import celery_worker, web_server

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
# Short backoff so retries happen within the test; every checkpoint emitted.
WORKER_ENV = {"JOB_RETRY_BACKOFF_SECONDS": "0.2", "JOB_PROGRESS_INTERVAL_SECONDS": "0"}


@pytest.fixture
def live(app):
    """The test app publishes tasks to Redis for the real worker instead of running them."""
    app.extensions["celery"].conf.task_always_eager = False
    return app


def wait_for(predicate, timeout: float = 30, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate.__name__}")


def job_state(client, user, job_id) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json


def job_event_rows(app, job_id) -> list[tuple[int, str, dict]]:
    with app.app_context():
        rows = db.session.execute(select(DomainEvent.id, DomainEvent.name, DomainEvent.payload)
                                  .where(DomainEvent.resource_type == "job",
                                         DomainEvent.resource_id == job_id)
                                  .order_by(DomainEvent.id)).all()
        db.session.rollback()
        return [tuple(r) for r in rows]


def create(client, user, episode_id, job_type="noop", params=None) -> dict:
    response = client.post("/api/v1/jobs", headers=user.headers,
                           json={"type": job_type, "episode_id": episode_id, "params": params or {}})
    assert response.status_code == 201, response.json
    return response.json


class JobsListener:
    """A /jobs Socket.IO client recording every event (first arrival of each id)."""

    def __init__(self, url: str, token: str):
        self.events: list[dict] = []
        self._seen: set = set()
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._on_event, namespace="/jobs")
        self.sio.connect(url, namespaces=["/jobs"], auth={"token": token}, wait_timeout=10)

    def _on_event(self, name, data):
        with self._lock:
            if isinstance(data, dict) and data.get("id") not in self._seen:
                self._seen.add(data.get("id"))
                self.events.append(data)  # a duplicate delivery (same id) is dropped, as clients do

    def subscribe(self, **room) -> dict:
        return self.sio.call("subscribe", room, namespace="/jobs", timeout=10)

    def of_job(self, job_id: int) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["data"].get("job_id") == job_id]

    def close(self) -> None:
        self.sio.disconnect()


def test_export_runs_on_a_worker_streams_ordered_events_and_the_zip_downloads(
        live, client, editor, episode):
    uploads = {}
    for name, data in (("take1.wav", b"RIFF" + bytes(range(256)) * 40), ("notes.txt", b"cue at 0:42")):
        r = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                        data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")
        assert r.status_code == 201
        uploads[r.json["id"]] = (name, data)
    with celery_worker(concurrency=2, **WORKER_ENV) as worker, web_server() as server:
        # The worker announced itself to /jobs and /admin when it came up.
        def announced():
            with live.app_context():
                return db.session.scalar(select(DomainEvent).where(
                    DomainEvent.name == "job_processor_started"))
        event = wait_for(announced)
        assert event.payload["concurrency"] == 2 and event.payload["max_concurrent"] == 2
        assert event.payload["hostname"].startswith("test-")

        listener = JobsListener(server.url, editor.token)
        try:
            assert listener.subscribe(episode_id=episode["id"])["ok"] is True
            api = f"{server.url}/api/v1"
            r = requests.post(f"{api}/jobs", headers=editor.headers, timeout=10,
                              json={"type": "export", "episode_id": episode["id"]})
            assert r.status_code == 201 and r.json()["status"] == "queued"
            job_id = r.json()["id"]
            wait_for(lambda: any(e["event"] == "job_completed" for e in listener.of_job(job_id)))
            received = listener.of_job(job_id)
        finally:
            listener.close()
        names = [e["event"] for e in received]
        assert names[0] == "job_created" and names[1] == "job_started"
        assert names[-1] == "job_completed" and set(names[2:-1]) == {"job_progress"}
        assert len(names) >= 5, names  # several checkpoints with the throttle at 0
        ids = [e["id"] for e in received]
        assert ids == sorted(ids)  # arrival order is transition order
        progress = [e["data"]["progress"] for e in received if e["event"] == "job_progress"]
        assert progress == sorted(progress) and progress[-1] == 100
        assert all(set(e) == {"id", "event", "data", "actor", "timestamp"} for e in received)
        # The database agrees: ids increase in transition order.
        assert [n for _, n, _ in job_event_rows(live, job_id)] == names

        results = received[-1]["data"]["results"]
        signed = requests.get(f"{api}/files/{results['file_id']}/download-url",
                              headers=editor.headers, timeout=10).json()
        archive = zipfile.ZipFile(io.BytesIO(requests.get(signed["url"], timeout=10).content))
        for file_id, (name, data) in uploads.items():
            assert archive.read(f"files/{file_id}-{name}") == data
        assert "metadata.json" in archive.namelist()
        assert "Traceback" not in worker.output()


def test_failing_twice_then_succeeding_shows_two_retries_then_completed(live, client, editor,
                                                                        episode):
    with celery_worker(concurrency=2, **WORKER_ENV):
        job = create(client, editor, episode["id"], params={"fail_times": 2})
        final = wait_for(lambda: (s := job_state(client, editor, job["id"]))["status"]
                         in ("completed", "failed") and s)
    assert final["status"] == "completed" and final["retry_count"] == 2
    rows = job_event_rows(live, job["id"])
    names = [n for _, n, _ in rows]
    assert [n for n in names if n in ("job_retry", "job_completed", "job_failed")] == [
        "job_retry", "job_retry", "job_completed"]
    delays = [p["delay"] for _, n, p in rows if n == "job_retry"]
    assert 0.2 <= delays[0] <= 0.25 and 0.4 <= delays[1] <= 0.5


def test_always_failing_job_ends_failed_and_its_creator_is_notified(live, client, editor, episode):
    with celery_worker(concurrency=2, **WORKER_ENV):
        job = create(client, editor, episode["id"], params={"fail_times": 100})
        final = wait_for(lambda: (s := job_state(client, editor, job["id"]))["status"]
                         in ("completed", "failed") and s)
        assert final["status"] == "failed" and final["retry_count"] == 3
        assert "noop failing on purpose" in final["error"]
        _, name, payload = job_event_rows(live, job["id"])[-1]
        assert name == "job_failed" and payload["retries_exhausted"] is True
        if (ROOT / "app" / "services" / "notifications" / "rules.py").exists():
            # The notifications layer turns job_failed into a notification for the creator.
            def notified():
                r = client.get("/api/v1/notifications?type=job:failed", headers=editor.headers)
                return r.status_code == 200 and r.json["items"]
            items = wait_for(notified, timeout=15)
            assert items[0]["data"].get("job_id", job["id"]) == job["id"]


def test_cancelling_a_running_job_stops_it_within_one_checkpoint(live, client, editor, episode):
    with celery_worker(concurrency=2, **WORKER_ENV):
        job = create(client, editor, episode["id"], params={"steps": 100, "duration_ms": 20000})
        wait_for(lambda: job_state(client, editor, job["id"])["progress"] > 0)
        r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor.headers)
        assert r.status_code == 200
        asked = time.monotonic()
        final = wait_for(lambda: (s := job_state(client, editor, job["id"]))["status"]
                         != "running" and s, every=0.02)
        took = time.monotonic() - asked
    assert final["status"] == "cancelled" and final["progress"] < 100
    assert took < 2.0, took  # a checkpoint every 200 ms; finishing would take ~20 s
    names = [n for _, n, _ in job_event_rows(live, job["id"])]
    assert names[-1] == "job_cancelled" and "job_completed" not in names


def test_a_killed_worker_does_not_leave_its_job_running_forever(live, client, editor, episode):
    with celery_worker(concurrency=2, **WORKER_ENV) as worker:
        job = create(client, editor, episode["id"], params={"steps": 30, "duration_ms": 3000})
        wait_for(lambda: job_state(client, editor, job["id"])["progress"] > 0)
        worker.kill()  # SIGKILL: no clean shutdown, the job is left 'running'
    time.sleep(1.5)
    assert job_state(client, editor, job["id"])["status"] == "running"
    with live.app_context():
        recover = live.extensions["celery"].tasks["workers.jobs.recover_stuck_jobs"]
        assert recover(timeout_seconds=1)["recovered"] == [job["id"]]
    requeued = job_state(client, editor, job["id"])
    assert requeued["status"] == "queued" and requeued["retry_count"] == 1
    with celery_worker(concurrency=2, **WORKER_ENV):  # the re-sent task runs it to the end
        final = wait_for(lambda: (s := job_state(client, editor, job["id"]))["status"]
                         in ("completed", "failed") and s)
    assert final["status"] == "completed"
    names = [n for _, n, _ in job_event_rows(live, job["id"])]
    assert names.count("job_started") == 2 and names[-1] == "job_completed"
    assert names.index("job_retry") < len(names) - names[::-1].index("job_started") - 1


def test_unknown_job_type_is_422_over_the_wire(live, editor, episode):
    with web_server() as server:
        r = requests.post(f"{server.url}/api/v1/jobs", headers=editor.headers, timeout=10,
                          json={"type": "transcode-to-8k", "episode_id": episode["id"]})
    assert r.status_code == 422 and "type" in r.json()["error"]["details"]
