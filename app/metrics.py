"""Prometheus metrics (issue 16): one module, so the hooks elsewhere are one call each.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (in the environment of every
web process and Celery worker, before they start: prometheus_client picks its value
storage at import), each process writes its samples to files in that directory and
``/metrics`` on any web process reads them all, so web processes and workers report
together. Without it (the embedded default: one process) the samples live in memory.
``python -m app.metrics reset`` empties the directory; run it once before starting the
processes of a deployment (counters of a previous run would otherwise be added in).

What cannot be counted by the process doing the work (outbox backlog, oldest undelivered
event, Celery queue depth) is read at scrape time from the database and the broker.

Access: ``METRICS_TOKEN`` (``Authorization: Bearer <token>``) or a client address in
``METRICS_ALLOW`` (addresses or networks; loopback by default). See deploy/monitoring.md.
"""
from __future__ import annotations

import atexit
import glob
import hmac
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)  # before the first sample is written

import redis  # noqa: E402
from celery.signals import worker_process_shutdown  # noqa: E402
from flask import Flask, Response, current_app, g, request  # noqa: E402
from kombu.transport.memory import Channel  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app.errors import Forbidden, Unauthorized, rollback_quietly  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import DomainEvent  # noqa: E402
from app.tasks import QUEUES  # noqa: E402

log = logging.getLogger(__name__)

# Seconds. Requests are mostly milliseconds; delivery lag spans a fast drain (tens of ms)
# to a worker outage (minutes); jobs run from milliseconds to many minutes.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)

NOTIFICATION_OUTCOMES = frozenset({"pushed", "muted", "quiet_hours", "rate_limited", "digest",
                                   "emailed", "email_failed"})

HTTP_REQUESTS = Counter("ec_http_requests_total", "HTTP requests by route (URL rule) and status",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("ec_http_request_duration_seconds", "HTTP request latency by route",
                         ["method", "route"], buckets=HTTP_BUCKETS)
SOCKETS = Gauge("ec_socket_connections", "Connected sockets per namespace (all processes)",
                ["namespace"], multiprocess_mode="livesum")
SOCKET_CONNECTS = Counter("ec_socket_connects_total", "Socket connects accepted", ["namespace"])
SOCKET_DISCONNECTS = Counter("ec_socket_disconnects_total", "Socket disconnects", ["namespace"])
EVENTS_RECORDED = Counter("ec_events_recorded_total", "Domain events committed to the outbox",
                          ["event"])
EVENTS_DELIVERED = Counter("ec_events_delivered_total", "Domain events delivered", ["event"])
DELIVERY_LAG = Histogram("ec_event_delivery_lag_seconds",
                         "Event recorded (commit) to delivered (delivery commit)",
                         buckets=LAG_BUCKETS)
EMIT_LAG = Histogram("ec_event_emit_lag_seconds",
                     "Event recorded (commit) to emitted to its Socket.IO rooms",
                     buckets=LAG_BUCKETS)
NOTIFICATION_DECISIONS = Counter("ec_notification_decisions_total",
                                 "Notification decisions by outcome", ["outcome"])
JOBS_FINISHED = Counter("ec_jobs_finished_total", "Job attempts finished by type and outcome",
                        ["type", "outcome"])
JOB_DURATION = Histogram("ec_job_duration_seconds", "Job attempt duration by type and outcome",
                         ["type", "outcome"], buckets=JOB_BUCKETS)

_enabled = True
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _now() -> float:
    return time.time()


# --- hooks called from the rest of the code (each one line there) ---------------------

def events_recorded(names: Iterable[str]) -> None:
    """Count committed events (called on commit, so a rolled-back write counts nothing)."""
    if _enabled:
        for name in names:
            EVENTS_RECORDED.labels(name).inc()


def events_delivered(events: Iterable, *, emitted_at: float) -> None:
    """Count a delivered batch and observe each event's lag from its commit (its
    ``created_at``, written in the committing transaction) to the emit and to now."""
    if not _enabled:
        return
    now = _now()
    for event in events:
        EVENTS_DELIVERED.labels(event.name).inc()
        created = _timestamp(event.created_at)
        if created is not None:
            EMIT_LAG.observe(max(0.0, emitted_at - created))
            DELIVERY_LAG.observe(max(0.0, now - created))


def socket_connected(namespace: str) -> None:
    if _enabled:
        SOCKETS.labels(namespace).inc()
        SOCKET_CONNECTS.labels(namespace).inc()


def socket_disconnected(namespace: str) -> None:
    if _enabled:
        SOCKETS.labels(namespace).dec()
        SOCKET_DISCONNECTS.labels(namespace).inc()


def sockets_reset(namespaces: Iterable[str]) -> None:
    """This process forgot every socket at once (a new server, a shutdown)."""
    for namespace in namespaces:
        socket_disconnected(namespace)


def notification_decision(outcome: str, n: int = 1) -> None:
    """Count ``n`` notification decisions of one outcome (one of NOTIFICATION_OUTCOMES)."""
    if outcome not in NOTIFICATION_OUTCOMES:
        raise ValueError(f"unknown notification outcome {outcome!r}")
    if _enabled and n > 0:
        NOTIFICATION_DECISIONS.labels(outcome).inc(n)


def job_finished(job_type: str, outcome: str, seconds: float) -> None:
    """A job attempt ended (completed, failed, retry, cancelled, lost)."""
    if _enabled:
        JOBS_FINISHED.labels(job_type, outcome).inc()
        JOB_DURATION.labels(job_type, outcome).observe(seconds)


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# --- scrape-time readings -------------------------------------------------------------

class ScrapeTimeCollector:
    """Outbox backlog and Celery queue depth, read when Prometheus scrapes (one indexed
    query, one pipelined round trip): no process owns them, so none could count them."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._outbox()
        yield from self._queues()

    def _outbox(self) -> Iterator[GaugeMetricFamily]:
        try:
            count, oldest = db.session.execute(
                select(func.count(), func.min(DomainEvent.created_at))
                .where(DomainEvent.delivered_at.is_(None))).one()
            db.session.rollback()  # end the read transaction: a scrape holds nothing open
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
            rollback_quietly()
            log.warning("metrics: outbox not readable: %s", exc)
            return
        yield GaugeMetricFamily("ec_outbox_backlog_events", "Undelivered events in the outbox",
                                value=count)
        created = _timestamp(oldest)
        yield GaugeMetricFamily("ec_outbox_oldest_undelivered_age_seconds",
                                "Age of the oldest undelivered event (0: none)",
                                value=max(0.0, _now() - created) if created else 0.0)

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        depths = queue_depths(self.app)
        if depths is None:
            return
        family = GaugeMetricFamily("ec_celery_queue_length", "Messages waiting per Celery queue",
                                   labels=["queue"])
        for queue, depth in sorted(depths.items()):
            family.add_metric([queue], depth)
        yield family


_PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: one list per priority step
_PRIORITY_STEPS = (3, 6, 9)
_broker_clients: dict[str, object] = {}


def queue_depths(app: Flask) -> dict[str, int] | None:
    """Messages waiting per queue: Redis list lengths, or the in-process memory broker's
    queues (embedded mode: only this process's, which is the whole broker there)."""
    celery = app.extensions.get("celery")
    if celery is None:
        return None
    url = celery.conf.broker_url or ""
    if url.startswith("memory://"):
        return {name: (Channel.queues[name].qsize() if name in Channel.queues else 0)
                for name in QUEUES}
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    try:
        client = _broker_client(url)
        pipe = client.pipeline(transaction=False)
        for name in QUEUES:
            pipe.llen(name)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{name}{_PRIORITY_SEP}{step}")
        lengths = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
        log.warning("metrics: broker queues not readable: %s", exc)
        return None
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {name: sum(lengths[i * per_queue:(i + 1) * per_queue])
            for i, name in enumerate(QUEUES)}


def _broker_client(url: str):
    client = _broker_clients.get(url)
    if client is None:
        # Short timeouts: a stalled broker must not hold the scrape for long.
        client = _broker_clients[url] = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=1)
    return client


# --- the endpoint and the HTTP hooks ----------------------------------------------------

def multiprocess_dir() -> str | None:
    return _MULTIPROC_DIR


def render(app: Flask) -> bytes:
    """The exposition text: every process's samples (or this one's) plus the scrape-time ones."""
    registry = CollectorRegistry(auto_describe=False)
    if _MULTIPROC_DIR:
        MultiProcessCollector(registry, path=_MULTIPROC_DIR)
    else:
        registry.register(_ProcessRegistry())
    registry.register(ScrapeTimeCollector(app))
    return generate_latest(registry)


class _ProcessRegistry:
    """The default registry's samples, as one collector of the per-scrape registry."""

    def collect(self):
        return REGISTRY.collect()


def _allowed_networks(value: str) -> list:
    networks = []
    for item in value.split(","):
        item = item.strip()
        if item:
            networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def _check_access() -> None:
    """Bearer token or allowed client address; else 401 (no/other scheme) or 403."""
    config = current_app.config
    token = config.get("METRICS_TOKEN") or ""
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        if hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode()):
            return
        raise Forbidden("Invalid metrics token", code="forbidden")
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        address = None
    if address is not None and any(address in net for net in current_app.extensions["ec_metrics_allow"]):
        return
    if token:
        raise Unauthorized("A bearer token is required for /metrics", code="unauthorized")
    raise Forbidden("This address may not read /metrics", code="forbidden")


def init_metrics(app: Flask) -> None:
    """Install the HTTP hooks and ``/metrics`` (nothing when METRICS_ENABLED is off)."""
    global _enabled
    _enabled = bool(app.config.get("METRICS_ENABLED", True))
    if not _enabled:
        return
    app.extensions["ec_metrics_allow"] = _allowed_networks(app.config.get("METRICS_ALLOW", ""))

    @app.before_request
    def _start_timer() -> None:
        g._ec_metrics_start = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        start = g.pop("_ec_metrics_start", None)
        if start is not None:
            # The URL rule, never the raw path: ids in paths would make a series per row.
            rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            # Any token is a method to werkzeug: unknown ones share a label (bounded series).
            method = request.method if request.method in _METHODS else "OTHER"
            HTTP_REQUESTS.labels(method, rule, str(response.status_code)).inc()
            HTTP_LATENCY.labels(method, rule).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics")
    def metrics_view() -> Response:
        """Prometheus exposition (token or allowed address, see deploy/monitoring.md)."""
        _check_access()
        return Response(render(app), mimetype=CONTENT_TYPE_LATEST)


def mark_dead() -> None:
    """This process is gone: drop its live gauges (its sockets) from the sums.

    Runs at exit (atexit; ``python wsgi.py``'s graceful shutdown calls it before
    ``os._exit``) and when a Celery pool child shuts down."""
    if _MULTIPROC_DIR:
        try:
            mark_process_dead(os.getpid(), _MULTIPROC_DIR)
        except OSError:
            pass


atexit.register(mark_dead)


def _connect_celery_signals() -> None:
    # A prefork child that exits (max tasks, a crash the parent notices) is not a web
    # process and holds no sockets, but its pid may be reused: mark it dead either way.
    worker_process_shutdown.connect(lambda **_: mark_dead(), weak=False)


_connect_celery_signals()


def reset(path: str | None = None) -> int:
    """Delete every sample file of the multiprocess directory; the number removed."""
    path = path or _MULTIPROC_DIR
    if not path:
        raise SystemExit("PROMETHEUS_MULTIPROC_DIR is not set")
    files = glob.glob(os.path.join(path, "*.db"))
    for name in files:
        os.remove(name)
    return len(files)


def main(argv: list[str]) -> int:
    """``python -m app.metrics reset [DIR]``."""
    if len(argv) < 1 or argv[0] != "reset":
        print("usage: python -m app.metrics reset [DIR]", file=sys.stderr)
        return 2
    removed = reset(argv[1] if len(argv) > 1 else None)
    print(f"removed {removed} sample files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
