"""Job processing with eager Celery: claim, handlers, progress, retries, cancel, recovery.

``POST /jobs`` runs the job inline after its commit here (``task_always_eager``); tests that
need a job to stay queued switch eager off, so the task goes to a broker nobody consumes.
The same behaviour with a real worker process is in ``test_job_worker.py``.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.jobs import handlers, runner
from app.jobs import service as job_service
from app.jobs.context import JobCancelled, JobContext
from app.models import ActivityLog, DomainEvent, File, Job, User
from app.redis_client import get_redis
from app.services import files as file_service
from app.services.drain import DRAIN_FLAG
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent


# ---- helpers ---------------------------------------------------------------------------


def create(client, user, episode_id, job_type="noop", params=None):
    response = client.post("/api/v1/jobs", headers=user.headers,
                           json={"type": job_type, "episode_id": episode_id, "params": params or {}})
    assert response.status_code == 201, response.json
    assert response.json["status"] == "queued"  # the job as created; the eager worker ran it since
    return get(client, user, response.json["id"])


def get(client, user, job_id):
    return client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json


def job_events(app, job_id):
    """(name, payload, delivered) of a job's events, in id order."""
    with app.app_context():
        rows = db.session.scalars(select(DomainEvent).where(
            DomainEvent.resource_type == "job", DomainEvent.resource_id == job_id)
            .order_by(DomainEvent.id))
        return [(e.name, e.payload, e.delivered_at is not None) for e in rows]


def names(app, job_id):
    return [name for name, _, _ in job_events(app, job_id)]


@contextmanager
def no_worker(app):
    """Tasks go to the broker instead of running inline: jobs stay queued."""
    conf = app.extensions["celery"].conf
    conf.task_always_eager = False
    try:
        yield
    finally:
        conf.task_always_eager = True
        with app.app_context():
            client = get_redis()
            if client is not None:  # the drain task it woke went to nobody: let the next wake
                client.delete(DRAIN_FLAG)


def upload(client, user, episode_id, data: bytes, name: str) -> dict:
    response = client.post(f"/api/v1/episodes/{episode_id}/files", headers=user.headers,
                           data={"file": (io.BytesIO(data), name)},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    return response.json


def download(client, user, file_id) -> bytes:
    url = client.get(f"/api/v1/files/{file_id}/download-url", headers=user.headers).json["url"]
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    return response.data


# ---- creation and validation -------------------------------------------------------------


def test_a_created_job_is_stored_as_the_response_says(app, client, editor, episode):
    """The row written by POST /jobs matches its response; no result is SQL NULL."""
    with no_worker(app):
        response = client.post("/api/v1/jobs", headers=editor.headers,
                               json={"type": "noop", "episode_id": episode["id"]})
    assert response.status_code == 201
    assert get(client, editor, response.json["id"]) == response.json
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job).where(
            Job.id == response.json["id"], Job.result.is_(None), Job.error.is_(None))) == 1


def test_unknown_type_or_bad_params_is_422(app, client, editor, viewer, episode):
    cases = [
        ({"type": "transmogrify", "episode_id": episode["id"]}, "type"),
        ({"type": "noop", "episode_id": episode["id"], "params": {"steps": 0}}, "params"),
        ({"type": "noop", "episode_id": episode["id"], "params": {"bogus": 1}}, "params"),
        ({"type": "checksum", "episode_id": episode["id"], "params": {"file_ids": ["x"]}}, "params"),
        ({"type": "export", "episode_id": episode["id"], "params": {"include_files": "maybe"}},
         "params"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/jobs", headers=editor.headers, json=body)
        assert response.status_code == 422, body
        assert response.json["error"]["code"] == "validation_error"
        assert field in response.json["error"]["details"]
    assert client.post("/api/v1/jobs", headers=viewer.headers,
                       json={"type": "noop", "episode_id": episode["id"]}).status_code == 403
    missing = client.post("/api/v1/jobs", headers=editor.headers,
                          json={"type": "noop", "episode_id": 99999})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    # Nothing half-written: the refused INSERT left no job and no event behind.
    assert client.get("/api/v1/jobs", headers=editor.headers).json["items"] == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DomainEvent)
                                 .where(DomainEvent.resource_type == "job")) == 0


def test_noop_job_runs_through_every_state_with_events_in_order(app, client, editor, episode):
    job = create(client, editor, episode["id"], params={"steps": 3})
    assert job["status"] == "completed" and job["progress"] == 100
    assert job["result"] == {"steps": 3, "duration_ms": 0, "attempt": 0}
    assert job["started_at"] and job["finished_at"] and job["error"] is None
    events = job_events(app, job["id"])
    assert [n for n, _, _ in events] == ["job_created", "job_started", "job_progress",
                                         "job_completed"]
    assert all(delivered for _, _, delivered in events)
    for _, payload, _ in events:
        assert payload["job_id"] == job["id"] and payload["episode_id"] == episode["id"]
    progress = events[2][1]
    assert progress["progress"] == 100 and progress["message"] == "Step 3 of 3"
    assert events[3][1]["results"] == job["result"]
    with app.app_context():
        actions = list(db.session.scalars(select(ActivityLog.action).where(
            ActivityLog.resource_type == "job", ActivityLog.resource_id == job["id"])
            .order_by(ActivityLog.id)))
    assert actions == ["created", "started", "completed"]  # progress is real-time only


def test_progress_is_stored_and_throttled(app, client, editor, episode):
    # Counts at the two ends of the throttle, not a rate over a measured time: with no
    # interval every checkpoint is stored; with an interval longer than the job, none is
    # but the final 100%, which the completion sends.
    for interval, expected in ((0, [2 * step for step in range(1, 51)]), (3600, [100])):
        app.config["JOB_PROGRESS_INTERVAL_SECONDS"] = interval
        job = create(client, editor, episode["id"], params={"steps": 50})
        values = [p["progress"] for n, p, _ in job_events(app, job["id"]) if n == "job_progress"]
        assert values == sorted(values) and values[-1] == 100
        assert values == expected
        assert job["progress"] == 100


def test_final_progress_is_sent_even_when_the_handler_never_reports_100(app, editor, episode,
                                                                        client):
    job = create(client, editor, episode["id"], "checksum")  # an episode without files
    assert job["status"] == "completed"
    progress = [p["progress"] for n, p, _ in job_events(app, job["id"]) if n == "job_progress"]
    assert progress[-1] == 100


# ---- retries -------------------------------------------------------------------------------


def test_failing_twice_then_succeeding_retries_with_backoff(app, client, editor, episode):
    app.config.update(JOB_RETRY_BACKOFF_SECONDS=1.0, JOB_RETRY_BACKOFF_MAX_SECONDS=60.0)
    job = create(client, editor, episode["id"], params={"fail_times": 2})
    assert job["status"] == "completed" and job["retry_count"] == 2
    assert job["result"]["attempt"] == 2 and job["error"] is None
    events = job_events(app, job["id"])
    assert [n for n, _, _ in events] == [
        "job_created", "job_started", "job_retry", "job_started", "job_retry", "job_started",
        "job_progress", "job_completed"]
    retries = [p for n, p, _ in events if n == "job_retry"]
    assert [r["retry_count"] for r in retries] == [1, 2]
    assert 1.0 <= retries[0]["delay"] <= 1.25 and 2.0 <= retries[1]["delay"] <= 2.5
    assert "noop failing on purpose (attempt 1 of 2)" in retries[0]["error"]


def test_always_failing_job_ends_failed_with_retries_exhausted(app, client, editor, episode):
    job = create(client, editor, episode["id"], params={"fail_times": 100})
    assert job["status"] == "failed" and job["retry_count"] == 3
    assert "noop failing on purpose (attempt 4 of 100)" in job["error"]
    events = job_events(app, job["id"])
    assert [n for n, _, _ in events].count("job_retry") == 3
    name, payload, delivered = events[-1]
    assert name == "job_failed" and delivered
    assert payload["retries_exhausted"] is True and payload["created_by"] == editor.id
    assert payload["error"] == job["error"] and payload["type"] == "noop"


def test_backoff_is_exponential_capped_and_jittered(app):
    app.config.update(JOB_RETRY_BACKOFF_SECONDS=2.0, JOB_RETRY_BACKOFF_MAX_SECONDS=10.0)
    with app.app_context():
        for n, low in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0)):
            delays = {job_service.backoff_seconds(n) for _ in range(20)}
            assert all(low <= d <= low * 1.25 for d in delays), (n, delays)
            assert len(delays) > 1  # jitter


def test_manual_retry_requeues_a_failed_job(app, client, editor, episode):
    job = create(client, editor, episode["id"], params={"fail_times": 4})
    assert job["status"] == "failed"
    assert client.post(f"/api/v1/jobs/{job['id']}/retry", headers=editor.headers).status_code == 200
    # Counters reset: attempts 0..3 fail again (fail_times counts attempts since the reset).
    again = get(client, editor, job["id"])
    assert again["status"] == "failed" and again["retry_count"] == 3
    assert names(app, job["id"]).count("job_retried") == 1
    # Neither a completed nor a running job can be retried.
    done = create(client, editor, episode["id"])
    r = client.post(f"/api/v1/jobs/{done['id']}/retry", headers=editor.headers)
    assert r.status_code == 409


# ---- cancel --------------------------------------------------------------------------------


def test_cancelled_queued_job_never_starts(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])
        assert job["status"] == "queued"
        r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor.headers)
        assert r.status_code == 200 and r.json["status"] == "cancelled"
    with app.app_context():
        assert runner.run(job["id"]) == "skipped"  # the task arrives anyway
    assert names(app, job["id"]) == ["job_created", "job_cancelled"]
    assert get(client, editor, job["id"])["started_at"] is None
    r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor.headers)
    assert r.status_code == 409


def test_cancelling_a_running_job_stops_it_at_the_next_checkpoint(app, client, editor, episode,
                                                                 monkeypatch):
    checkpoints: list[int] = []  # the percent of every checkpoint the handler reached
    real_checkpoint = runner.Checkpoint.__call__

    def counted(self, percent, message):
        checkpoints.append(percent)
        return real_checkpoint(self, percent, message)

    monkeypatch.setattr(runner.Checkpoint, "__call__", counted)
    with no_worker(app):
        job = create(client, editor, episode["id"], params={"steps": 40, "duration_ms": 4000})
        outcome = {}

        def work():
            with app.app_context():
                outcome["value"] = runner.run(job["id"])

        thread = threading.Thread(target=work)
        thread.start()
        wait_for(lambda: get(client, editor, job["id"])["progress"] > 0, 10, 0.02)
        r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor.headers)
        assert r.status_code == 200 and r.json["cancel_requested"] is True
        after_cancel = len(checkpoints)
        thread.join(10)
    assert outcome["value"] == "cancelled"
    final = get(client, editor, job["id"])
    assert final["status"] == "cancelled" and 0 < final["progress"] < 100
    # One step, not the remaining ones: at most one checkpoint began after the cancel was
    # committed (it raises), and nothing was stored after it (bench/job_cancel.py times it).
    assert len(checkpoints) - after_cancel <= 1, checkpoints[after_cancel:]
    assert final["progress"] == r.json["progress"]
    assert names(app, job["id"])[-1] == "job_cancelled"
    assert "job_completed" not in names(app, job["id"])


def test_checkpoint_heartbeat_keeps_a_quiet_job_alive_and_still_sees_a_cancel(app, client, editor,
                                                                             episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])
    with app.app_context():
        attempt = job_service.claim_job(job["id"])
        checkpoint = runner.Checkpoint(attempt, interval=60, heartbeat=0)
        before = db.session.get(Job, job["id"]).updated_at
        time.sleep(0.01)
        checkpoint(40, "quiet")  # held back by the throttle, but the heartbeat is written
        db.session.expire_all()
        after = db.session.get(Job, job["id"])
        assert after.updated_at > before and after.progress == 0
        db.session.commit()
        job_service.cancel_job(db.session.get(User, editor.id), job["id"])
        with pytest.raises(JobCancelled):
            checkpoint(40, "quiet")
    assert names(app, job["id"]) == ["job_created", "job_started"]  # no progress was sent


def test_cancelled_export_leaves_no_output(app, client, editor, episode):
    for i in range(3):
        upload(client, editor, episode["id"], bytes([i]) * 300_000, f"part{i}.wav")
    with no_worker(app):
        job = create(client, editor, episode["id"], "export")
    with app.app_context():
        attempt = job_service.claim_job(job["id"])
        checkpoint = runner.Checkpoint(attempt, interval=0, heartbeat=60)
        calls = []

        def progress_then_cancel(percent, message):
            calls.append(percent)
            if len(calls) == 3:  # mid-archive: a real cancel through the service
                job_service.cancel_job(db.session.get(User, editor.id), job["id"])
            checkpoint(percent, message)

        ctx = JobContext(attempt.id, attempt.episode_id, "export", {"include_files": True}, 0,
                         editor.id, progress_then_cancel)
        with pytest.raises(JobCancelled):
            handlers.export(ctx)
        assert job_service.finish_cancelled(attempt)
        storage = file_service.storage_dir()
        assert not list(storage.glob("*.part"))
        assert db.session.scalar(select(db.func.count(File.id))) == 3
    assert get(client, editor, job["id"])["status"] == "cancelled"


# ---- real handlers -------------------------------------------------------------------------


def test_export_zips_metadata_and_files_as_a_new_file(app, client, editor, episode):
    first = upload(client, editor, episode["id"], b"RIFF" + b"\x01" * 5000, "take1.wav")
    second = upload(client, editor, episode["id"], b"script text", "script.txt")
    job = create(client, editor, episode["id"], "export")
    assert job["status"] == "completed", job
    result = job["result"]
    assert result["included_file_ids"] == [first["id"], second["id"]] and result["missing"] == []
    archive = zipfile.ZipFile(io.BytesIO(download(client, editor, result["file_id"])))
    assert sorted(archive.namelist()) == sorted([
        "metadata.json", f"files/{first['id']}-take1.wav", f"files/{second['id']}-script.txt"])
    assert archive.read(f"files/{first['id']}-take1.wav") == b"RIFF" + b"\x01" * 5000
    metadata = json.loads(archive.read("metadata.json"))
    assert metadata["episode"]["title"] == "Pilot" and metadata["job_id"] == job["id"]
    assert [f["sha256"] for f in metadata["files"]] == [first["sha256"], second["sha256"]]
    stored = client.get(f"/api/v1/files/{result['file_id']}", headers=editor.headers).json
    assert stored["episode_id"] == episode["id"] and stored["content_type"] == "application/zip"
    assert stored["sha256"] == result["sha256"]
    with app.app_context():
        uploaded = db.session.scalar(select(DomainEvent).where(
            DomainEvent.name == "file_uploaded", DomainEvent.resource_id == result["file_id"]))
        assert uploaded.payload["source"] == "export" and uploaded.payload["job_id"] == job["id"]
        assert not list(file_service.storage_dir().glob("*.part"))
    # A second export does not nest the first one's zip.
    again = create(client, editor, episode["id"], "export")
    assert again["result"]["included_file_ids"] == [first["id"], second["id"]]


def test_export_without_files_and_of_missing_bytes(app, client, editor, episode):
    meta = upload(client, editor, episode["id"], b"abc", "gone.mp3")
    with app.app_context():
        file_service.path_of(db.session.get(File, meta["id"])).unlink()
    job = create(client, editor, episode["id"], "export")
    assert job["status"] == "completed"
    assert job["result"]["missing"] == [{"file_id": meta["id"], "filename": "gone.mp3"}]
    bare = create(client, editor, episode["id"], "export", {"include_files": False})
    names_in_zip = zipfile.ZipFile(io.BytesIO(
        download(client, editor, bare["result"]["file_id"]))).namelist()
    assert names_in_zip == ["metadata.json"]


def test_checksum_reports_mismatches_and_missing_files(app, client, editor, episode):
    good = upload(client, editor, episode["id"], b"good bytes", "good.wav")
    bad = upload(client, editor, episode["id"], b"original", "bad.wav")
    gone = upload(client, editor, episode["id"], b"soon gone", "gone.wav")
    with app.app_context():
        file_service.path_of(db.session.get(File, bad["id"])).write_bytes(b"corrupted")
        file_service.path_of(db.session.get(File, gone["id"])).unlink()
    job = create(client, editor, episode["id"], "checksum")
    assert job["status"] == "completed"
    result = job["result"]
    assert result["checked"] == 3 and result["ok"] == 1
    assert [m["file_id"] for m in result["mismatches"]] == [bad["id"]]
    assert result["mismatches"][0]["actual"] == hashlib.sha256(b"corrupted").hexdigest()
    assert result["mismatches"][0]["expected"] == bad["sha256"]
    assert [m["file_id"] for m in result["missing"]] == [gone["id"]]
    assert {f["file_id"]: f["status"] for f in result["files"]} == {
        good["id"]: "ok", bad["id"]: "mismatch", gone["id"]: "missing"}
    some = create(client, editor, episode["id"], "checksum", {"file_ids": [good["id"], 4242]})
    assert some["result"]["checked"] == 1 and some["result"]["unknown_file_ids"] == [4242]


# ---- concurrency and recovery ---------------------------------------------------------------


def test_only_one_of_many_concurrent_claims_wins(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])
    results, barrier = [], threading.Barrier(6)

    def claim():
        with app.app_context():
            barrier.wait()
            results.append(job_service.claim_job(job["id"]))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 6 and sum(r is not None for r in results) == 1
    assert names(app, job["id"]).count("job_started") == 1


def test_stuck_running_job_is_requeued_and_the_dead_attempt_is_fenced(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])
        with app.app_context():
            dead = job_service.claim_job(job["id"])  # a worker that then died
            assert job_service.recover_stuck_jobs(timeout_seconds=600) == []  # fresh heartbeat
            time.sleep(0.01)
            assert job_service.recover_stuck_jobs(timeout_seconds=0) == [job["id"]]
            # The dead attempt, should it wake up, can no longer write.
            assert job_service.record_progress(dead, 50, "zombie") == job_service.LOST
            assert job_service.checkpoint_state(dead) == job_service.LOST
            assert job_service.complete(dead, {}, final_progress="Completed") is None
        queued = get(client, editor, job["id"])
        assert queued["status"] == "queued" and queued["retry_count"] == 1
        assert queued["error"].startswith("Worker lost")
    retry = [p for n, p, _ in job_events(app, job["id"]) if n == "job_retry"]
    assert retry[0]["recovered"] is True and retry[0]["retry_count"] == 1
    with app.app_context():
        assert runner.run(job["id"]) == "completed"


def test_stuck_job_out_of_retries_fails(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job["id"]).values(retry_count=3))
        db.session.commit()
        job_service.claim_job(job["id"])  # a worker that then died
        time.sleep(0.01)
        recover = app.extensions["celery"].tasks["workers.jobs.recover_stuck_jobs"]
        assert recover(timeout_seconds=0)["recovered"] == [job["id"]]
    final = get(client, editor, job["id"])
    assert final["status"] == "failed" and final["finished_at"]
    name, payload, delivered = job_events(app, job["id"])[-1]
    assert name == "job_failed" and payload["retries_exhausted"] is True and delivered


def test_long_queued_job_gets_its_task_resent(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"])  # its message is lost
    with app.app_context():
        assert job_service.resend_stale_queued(timeout_seconds=60) == []
        past = db.session.get(Job, job["id"]).updated_at.replace(year=2000)
        db.session.execute(update(Job).where(Job.id == job["id"]).values(updated_at=past))
        db.session.commit()
        assert job_service.resend_stale_queued(timeout_seconds=60) == [job["id"]]  # eager: runs
    assert get(client, editor, job["id"])["status"] == "completed"


def test_job_deleted_with_its_episode_mid_run_is_dropped_quietly(app, client, editor, episode):
    with no_worker(app):
        job = create(client, editor, episode["id"], params={"steps": 2})
    with app.app_context():
        attempt = job_service.claim_job(job["id"])
    assert client.delete(f"/api/v1/episodes/{episode['id']}", headers=editor.headers).status_code == 204
    with app.app_context():
        assert runner.execute(attempt) == "lost"


def test_processor_announcement_is_an_event_to_jobs_and_admin(app):
    with app.app_context():
        task = app.extensions["celery"].tasks["workers.jobs.announce_processor"]
        event_id = task(hostname="w1@host", concurrency=4, max_concurrent=8)
        event = db.session.get(DomainEvent, event_id)
        assert event.name == "job_processor_started" and event.delivered_at is not None
        assert event.payload == {"hostname": "w1@host", "concurrency": 4, "max_concurrent": 8}
        assert db.session.scalar(select(ActivityLog.id).where(ActivityLog.event_id == event_id)) is None
        from app.realtime.emit import ADMIN, JOBS, ROOM_ADMINS, ROOM_ALL, routes_for

        assert set(routes_for(event)) >= {(JOBS, ROOM_ALL), (ADMIN, ROOM_ADMINS)}


def test_a_cancel_before_the_completing_write_wins_over_a_held_back_100(app, client, editor,
                                                                          episode):
    """ctx.progress(100) leaves its cancel check to the completing write (one round trip
    less per job): a cancel that lands in between still ends the job cancelled."""
    with no_worker(app):
        job = create(client, editor, episode["id"])
    with app.app_context():
        attempt = job_service.claim_job(job["id"])
        checkpoint = runner.Checkpoint(attempt, interval=60, heartbeat=60)
        checkpoint(100, "done")  # held back by the throttle; no cancel yet
        assert checkpoint.deferred
        job_service.cancel_job(db.session.get(User, editor.id), job["id"])
        assert job_service.complete(attempt, {}, final_progress=checkpoint.final_progress(),
                                    honour_cancel=checkpoint.deferred) == "cancelled"
    final = get(client, editor, job["id"])
    assert final["status"] == "cancelled" and final["result"] is None
    assert names(app, job["id"])[-1] == "job_cancelled"
    assert "job_completed" not in names(app, job["id"])


def test_only_the_first_100_defers_its_cancel_check(app, client, editor, episode):
    """A handler still reporting 100% afterwards (a checksum finding more bytes than
    recorded) is checked at each later call: a cancel stops it there, not at the end."""
    with no_worker(app):
        job = create(client, editor, episode["id"])
    with app.app_context():
        attempt = job_service.claim_job(job["id"])
        checkpoint = runner.Checkpoint(attempt, interval=60, heartbeat=60)
        checkpoint(100, "hashing")  # deferred
        job_service.cancel_job(db.session.get(User, editor.id), job["id"])
        with pytest.raises(JobCancelled):
            checkpoint(100, "still hashing")


def test_export_zip_entries_are_safe_names(app, client, editor, episode):
    """No entry carries a path separator, a climb, a control character or a device name,
    also for rows stored before upload names were cleaned."""
    legacy = upload(client, editor, episode["id"], b"legacy", "legacy.bat")
    fresh = upload(client, editor, episode["id"], b"fresh", "NUL.txt")
    with app.app_context():
        db.session.get(File, legacy["id"]).filename = "x\\..\\..\\Users\\Public\\evil\x07.bat"
        db.session.commit()
    job = create(client, editor, episode["id"], "export")
    assert job["status"] == "completed", job
    archive = zipfile.ZipFile(io.BytesIO(download(client, editor, job["result"]["file_id"])))
    assert sorted(archive.namelist()) == sorted([
        "metadata.json", f"files/{legacy['id']}-evil.bat", f"files/{fresh['id']}-_NUL.txt"])
    assert archive.read(f"files/{legacy['id']}-evil.bat") == b"legacy"
    for name in archive.namelist():
        assert "\\" not in name and ".." not in name and name.isprintable()
