"""Isolated Celery queues: routing, what workers consume, and that long jobs never delay an
event reaching a client (real workers with ``-c 1`` per queue, and the embedded default)."""
from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from app.extensions import db
from app.models import DomainEvent
from app.tasks import EVENTS, JOBS, MAINTENANCE, NON_JOB_QUEUES, NOTIFICATIONS, QUEUES, TASK_ROUTES
from tests.helpers import SocketClient as Client
from tests.helpers import wait_for
from tests.processes import celery_worker, web_server

EXPECTED = {
    "workers.events.deliver": EVENTS,
    "workers.events.drain": EVENTS,
    "workers.events.redeliver_stale": EVENTS,
    "workers.notifications.send_emails": NOTIFICATIONS,
    "workers.notifications.dispatch_range": NOTIFICATIONS,
    "workers.notifications.deliver_scheduled": NOTIFICATIONS,
    "workers.notifications.send_digests": NOTIFICATIONS,
    "workers.notifications.delete_expired": NOTIFICATIONS,
    "workers.notifications.delete_old_read": NOTIFICATIONS,
    "workers.jobs.run_job": JOBS,
    "workers.jobs.recover_stuck_jobs": MAINTENANCE,
    "workers.jobs.announce_processor": MAINTENANCE,
    "workers.maintenance.purge_activity": MAINTENANCE,
    "workers.maintenance.sweep_presence": MAINTENANCE,
    "workers.maintenance.purge_events": MAINTENANCE,
    "workers.maintenance.purge_refresh_tokens": MAINTENANCE,
}


def test_the_router_sends_each_task_to_its_queue(app):
    celery_app = app.extensions["celery"]
    router = celery_app.amqp.router
    ours = sorted(name for name in celery_app.tasks if name.startswith("workers."))
    assert ours == sorted(EXPECTED), "a new task needs a route (and a line here)"
    for name, queue in EXPECTED.items():
        assert router.route({}, name)["queue"].name == queue, name


def test_every_task_has_an_explicit_route_none_falls_to_the_default(app):
    from celery.app.routes import MapRoute

    routes = MapRoute(TASK_ROUTES)
    for name in EXPECTED:
        assert routes(name) is not None, name


def test_beat_tasks_are_routed_off_the_jobs_queue(app):
    router = app.extensions["celery"].amqp.router
    for entry in app.extensions["celery"].conf.beat_schedule.values():
        assert router.route({}, entry["task"])["queue"].name != JOBS, entry["task"]


def test_a_worker_without_q_consumes_every_queue(app):
    from app.tasks import consumed_queues

    celery_app = app.extensions["celery"]
    assert consumed_queues(celery_app) == set(QUEUES)
    assert {q.name for q in celery_app.conf.task_queues} == set(QUEUES)


# ---- end to end --------------------------------------------------------------------------

LONG_NOOP = {"type": "noop", "params": {"duration_ms": 120_000, "steps": 600}}


def _status(api: str, user, job_id: int) -> str:
    return requests.get(f"{api}/jobs/{job_id}", headers=user.headers, timeout=10).json()["status"]


def _processor_announcements(app) -> list[dict]:
    with app.app_context():
        payloads = list(db.session.scalars(select(DomainEvent.payload).where(
            DomainEvent.name == "job_processor_started")))
        db.session.rollback()
        return payloads


def _update_arrives_while_jobs_hold_every_job_thread(url: str, editor, viewer, job_threads: int):
    """Fill every job thread with a long job, queue one more, then update the episode: the
    update reaches a viewer in the room while the jobs are still running and queued."""
    api = f"{url}/api/v1"
    episode = requests.post(f"{api}/episodes", headers=editor.headers, timeout=10,
                            json={"title": "Queued", "episode_number": 7}).json()
    jobs = []
    for _ in range(job_threads + 1):
        r = requests.post(f"{api}/jobs", headers=editor.headers, timeout=10,
                          json={**LONG_NOOP, "episode_id": episode["id"]})
        assert r.status_code == 201, r.text
        jobs.append(r.json()["id"])
    running = jobs[:job_threads]
    try:
        wait_for(lambda: all(_status(api, editor, j) == "running" for j in running), 60,
                 what="the first jobs to start")
        viewer_client = Client(url, viewer.token, ["/episodes"])
        try:
            assert viewer_client.call("join", {"episode_id": episode["id"]}, "/episodes")["ok"]
            r = requests.patch(f"{api}/episodes/{episode['id']}", headers=editor.headers,
                               json={"title": "Not behind the jobs"}, timeout=10)
            assert r.status_code == 200
            [update] = viewer_client.wait("episode_updated", timeout=45)
            assert update["data"]["changes"]["title"]["after"] == "Not behind the jobs"
            # Ordering, not timing: the jobs that took every job thread are still running,
            # and the one queued before the update is still waiting.
            assert [_status(api, editor, j) for j in jobs] == ["running"] * job_threads + ["queued"]
        finally:
            viewer_client.close()
    finally:
        for job_id in jobs:
            requests.post(f"{api}/jobs/{job_id}/cancel", headers=editor.headers, timeout=10)
        wait_for(lambda: all(_status(api, editor, j) == "cancelled" for j in jobs), 60,
                 what="the cancels")


@pytest.mark.redis
def test_long_jobs_do_not_delay_an_episode_update_with_one_process_per_queue(app, editor, viewer):
    with celery_worker(concurrency=1, queues=",".join(NON_JOB_QUEUES)) as events_worker, \
            celery_worker(concurrency=1, queues=JOBS) as jobs_worker, web_server() as server:
        _update_arrives_while_jobs_hold_every_job_thread(server.url, editor, viewer, 1)
        # Each worker served only its own queues: the update went through the events
        # worker, and no job ran there.
        assert "Task workers.events.drain[" in events_worker.output()
        assert "Task workers.jobs.run_job[" not in events_worker.output()
        assert "Task workers.jobs.run_job[" in jobs_worker.output()
        assert "Task workers.events." not in jobs_worker.output()
        # Only the worker that runs jobs announced itself as a job processor.
        [announced] = _processor_announcements(app)
        assert announced["hostname"] in jobs_worker.output()
        assert announced["hostname"] not in events_worker.output()


def test_long_jobs_do_not_delay_an_episode_update_in_the_embedded_default(app, editor, viewer):
    # No REDIS_URL: the in-memory broker, and the web process runs the workers and beat.
    with web_server(EMBEDDED_WORKER="1", REDIS_URL="") as server:
        _update_arrives_while_jobs_hold_every_job_thread(server.url, editor, viewer, 2)
        log = server.output()
    assert "embedded Celery workers (2 threads for events,notifications,maintenance, " \
           "2 for jobs)" in log
    [announced] = _processor_announcements(app)
    assert announced["hostname"].startswith("embedded-jobs@") and announced["concurrency"] == 2


@pytest.mark.redis
def test_a_plain_worker_serves_all_four_queues(worker):
    banner = worker.output().split("[queues]", 1)[1].split("[tasks]", 1)[0]
    for queue in QUEUES:
        assert f".> {queue} " in banner, banner
