"""End to end: ``/metrics`` of a real web process aggregates what a real Celery worker counted
(multiprocess mode: both write to one PROMETHEUS_MULTIPROC_DIR)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests
import socketio as sio_client

from tests.helpers import wait_for
from tests.processes import ROOT, celery_worker, service_env, web_server
from tests.test_metrics import value

pytestmark = pytest.mark.redis


def test_web_and_worker_report_together(app, editor, tmp_path_factory):
    app.extensions["celery"].control.purge()  # tasks left by earlier tests name reused ids
    directory = tmp_path_factory.mktemp("prom", numbered=True)
    (directory / "counter_1.db").write_bytes(b"left by an earlier run")
    reset = subprocess.run([sys.executable, "-m", "app.metrics", "reset"], cwd=ROOT,
                           env=service_env(PROMETHEUS_MULTIPROC_DIR=str(directory)),
                           capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0, reset.stderr
    assert list(directory.iterdir()) == []
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "METRICS_TOKEN": "e2e-token",
           "METRICS_ALLOW": ""}
    auth = {"Authorization": "Bearer e2e-token"}
    with celery_worker(concurrency=1, **env) as worker, web_server(
            async_mode="eventlet", **env) as server:
        api = f"{server.url}/api/v1"
        assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 401
        r = requests.post(f"{api}/episodes", headers=editor.headers,
                          json={"title": "Metered", "episode_number": 1}, timeout=10)
        assert r.status_code == 201, r.text
        r = requests.patch(f"{api}/episodes/{r.json()['id']}", headers=editor.headers,
                           json={"title": "Metered twice"}, timeout=10)
        assert r.status_code == 200, r.text

        def delivered() -> str | None:
            text = requests.get(f"{server.url}/metrics", headers=auth, timeout=10).text
            done = value(text, "ec_events_delivered_total", event="episode_updated") >= 1
            return text if done else None

        text = wait_for(delivered, 60, 0.2, "episode_updated delivered in /metrics")
        pids = {name.stem.rsplit("_", 1)[-1] for name in directory.glob("*.db")}
        worker_log = worker.output()
        sock = sio_client.Client(reconnection=False)
        sock.connect(server.url, namespaces=["/feed"], auth={"token": editor.token},
                     transports=["websocket"], wait_timeout=10)
        try:
            sockets = requests.get(f"{server.url}/metrics", headers=auth, timeout=10).text
        finally:
            sock.disconnect()
        web_gauges = directory / f"gauge_livesum_{server.proc.pid}.db"
        assert web_gauges.exists()
    # Stopped with SIGTERM (graceful shutdown): the web process marked itself dead.
    assert not web_gauges.exists()
    assert value(sockets, "ec_socket_connections", namespace="/feed") == 1
    assert value(sockets, "ec_socket_connects_total", namespace="/feed") == 1
    assert value(text, "ec_events_recorded_total", event="episode_updated") == 1
    assert value(text, "ec_events_delivered_total", event="episode_updated") == 1
    assert value(text, "ec_event_delivery_lag_seconds_count") >= 2
    assert value(text, "ec_event_emit_lag_seconds_count") >= 2
    assert value(text, "ec_http_requests_total", method="PATCH",
                 route="/api/v1/episodes/<int:episode_id>", status="200") == 1
    # Counted by the web process (recorded, HTTP) and by the worker's pool process
    # (delivered): at least two processes wrote samples, and /metrics summed them.
    assert str(server.proc.pid) in pids, (pids, worker_log[-2000:])
    assert len(pids - {str(server.proc.pid)}) >= 1, pids
