"""Configuration read from the environment.

No variables set means the embedded default: a SQLite file under ``instance/``, no Redis,
Celery on an in-memory broker with a worker and beat inside the web process.
``DATABASE_URL`` switches to PostgreSQL, ``REDIS_URL`` turns on Redis (Celery broker,
Socket.IO message queue, token blocklist, rate limits, presence).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import ModuleType

# The mapping every setting below reads: the process environment, or the one handed to
# build_configs(), which runs this module's code again in a new module object.
ENV: Mapping[str, str] = globals().get("_BUILD_ENVIRON", os.environ)

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(ENV.get("INSTANCE_DIR", BASE_DIR / "instance"))

DEFAULT_SECRET_KEY = "dev-secret-key-change-me"
DEFAULT_JWT_SECRET_KEY = "dev-jwt-secret-key-change-me-please-32b"


def _bool(name: str, default: bool = False) -> bool:
    value = ENV.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = ENV.get(name)
    return int(value) if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = ENV.get(name)
    return float(value) if value not in (None, "") else default


def database_url() -> str:
    """The SQLAlchemy URL: PostgreSQL through psycopg 3 when DATABASE_URL is set."""
    url = ENV.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{INSTANCE_DIR / 'episode_control.db'}"
    # Accept the common spellings and always use the psycopg (3) driver.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Config:
    """Base configuration; every value can be overridden by an environment variable."""

    ENV_NAME = "development"
    SECRET_KEY = ENV.get("SECRET_KEY", DEFAULT_SECRET_KEY)
    SQLALCHEMY_DATABASE_URI = database_url()
    # A web process serves many sockets at once (green threads under eventlet): a pool of
    # 5 + 10 made connect/disconnect storms queue for connections and time out.
    # No pool_pre_ping: it costs a round trip on every checkout, i.e. every transaction
    # (a fifth of a job's). A connection is pinged only after it sat idle in the pool for
    # DB_PING_IDLE_SECONDS (app/db.py); a busy one is known alive from its last use.
    SQLALCHEMY_ENGINE_OPTIONS: dict = {
        "pool_size": _int("DB_POOL_SIZE", 10),
        "max_overflow": _int("DB_MAX_OVERFLOW", 30),
        # Bounded: a request or socket event waits at most this long for a connection, then
        # fails cleanly (REST 503, socket ack {"ok": false}) instead of stalling.
        "pool_timeout": _float("DB_POOL_TIMEOUT", 5.0),
    }
    DB_PING_IDLE_SECONDS = _float("DB_PING_IDLE_SECONDS", 10.0)
    REDIS_URL = ENV.get("REDIS_URL") or None
    # The app's Redis client pool (auth cache, presence, delivery flags): at most this many
    # connections per process; a caller waits up to the timeout for a free one.
    REDIS_POOL_SIZE = _int("REDIS_POOL_SIZE", 128)
    REDIS_POOL_TIMEOUT = _float("REDIS_POOL_TIMEOUT", 5.0)
    # Redis is a cache and a transport: a dead one must cost a request next to nothing
    # (app/redis_client.py). Short timeouts, no retries, and after a failure Redis is
    # treated as down for REDIS_RETRY_SECONDS (every use takes its fallback at once).
    REDIS_CONNECT_TIMEOUT = _float("REDIS_CONNECT_TIMEOUT", 0.5)
    REDIS_SOCKET_TIMEOUT = _float("REDIS_SOCKET_TIMEOUT", 1.0)
    REDIS_RETRY_SECONDS = _float("REDIS_RETRY_SECONDS", 2.0)
    # PostgreSQL unreachable: requests answer 503 database_unavailable with this Retry-After.
    DB_RETRY_AFTER_SECONDS = _int("DB_RETRY_AFTER_SECONDS", 5)

    JWT_SECRET_KEY = ENV.get("JWT_SECRET_KEY", DEFAULT_JWT_SECRET_KEY)
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_ACCESS_TOKEN_SECONDS", 15 * 60))
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_REFRESH_TOKEN_SECONDS", 30 * 86400))
    JWT_ERROR_MESSAGE_KEY = "message"
    # With Redis, a request's user comes from a short-lived cache read in the blocklist's
    # round trip (no SELECT); changes to a user drop it after commit (app/auth.py).
    USER_CACHE_SECONDS = _int("USER_CACHE_SECONDS", 30)

    STORAGE_DIR = ENV.get("STORAGE_DIR", str(INSTANCE_DIR / "files"))
    # The upload route's limit; every other route is held to MAX_JSON_BYTES (app/limits.py).
    MAX_CONTENT_LENGTH = _int("MAX_UPLOAD_BYTES", 100 * 1024 * 1024)
    MAX_JSON_BYTES = _int("MAX_JSON_BYTES", 1024 * 1024)

    # Rate limits (flask-limiter; "N per minute;M per hour" strings). Counted in Redis with
    # REDIS_URL, else in process memory; when Redis is unreachable, in memory until it is
    # back. A login costs one scrypt hash whatever the email, so the per-IP login limit is
    # also what bounds the CPU one client can spend.
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_STRATEGY = ENV.get("RATELIMIT_STRATEGY", "moving-window")
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    # A storage error after the fallback (Redis dying mid-request) lets the request through
    # rather than answering 500.
    RATELIMIT_SWALLOW_ERRORS = True
    RATELIMIT_HEADERS_ENABLED = False  # Retry-After goes on the 429 only (app/errors.py)
    RATELIMIT_LOGIN_PER_IP = ENV.get("RATELIMIT_LOGIN_PER_IP", "30 per minute;300 per hour")
    # Failed logins (401) per account, whatever the address they come from.
    RATELIMIT_LOGIN_PER_ACCOUNT = ENV.get("RATELIMIT_LOGIN_PER_ACCOUNT",
                                                 "5 per minute;20 per hour")
    RATELIMIT_REGISTER_PER_IP = ENV.get("RATELIMIT_REGISTER_PER_IP", "10 per hour")
    RATELIMIT_REFRESH_PER_USER = ENV.get("RATELIMIT_REFRESH_PER_USER", "30 per minute")
    DOWNLOAD_URL_SECONDS = _int("DOWNLOAD_URL_SECONDS", 3600)

    # Logs (app/logs.py): "text" (the default) or "json" (one object per line, with the
    # request, user, event and task ids); the root level.
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    # The admin delivery timeline (app/services/timeline.py): delivery steps and notification
    # decisions written with each batch, deleted with their events (EVENT_RETENTION_DAYS).
    DELIVERY_TIMELINE = _bool("DELIVERY_TIMELINE", True)

    # Event pipeline and maintenance.
    EVENT_REDELIVERY_GRACE_SECONDS = _int("EVENT_REDELIVERY_GRACE_SECONDS", 60)
    EVENT_MAX_ATTEMPTS_BEFORE_ALERT = _int("EVENT_MAX_ATTEMPTS_BEFORE_ALERT", 5)
    ACTIVITY_RETENTION_DAYS = _int("ACTIVITY_RETENTION_DAYS", 90)
    # Delivered outbox events are kept this long (re-delivery and replay need recent ones).
    EVENT_RETENTION_DAYS = _int("EVENT_RETENTION_DAYS", 30)
    EMBEDDED_WORKER = _bool("EMBEDDED_WORKER", True)
    # First run: the first account registered on an empty instance becomes admin. Only the
    # embedded default (DevelopmentConfig without DATABASE_URL) turns it on by default.
    FIRST_USER_BECOMES_ADMIN = _bool("FIRST_USER_BECOMES_ADMIN", False)
    # Multiplies every beat interval (app/tasks.py): tests and demos run the periodic
    # tasks within seconds (0.02: the 30 s re-delivery sweep every 0.6 s).
    BEAT_INTERVAL_SCALE = _float("BEAT_INTERVAL_SCALE", 1.0)

    # Job processing (workers/jobs.py). A running job whose heartbeat (progress writes) is
    # older than the timeout is treated as orphaned by a dead worker; handlers must reach a
    # progress checkpoint more often than that.
    JOB_RUNNING_TIMEOUT_SECONDS = _int("JOB_RUNNING_TIMEOUT_SECONDS", 600)
    # A queued job older than this gets its task re-sent (a lost broker message); duplicates
    # are harmless because a job is claimed atomically.
    JOB_QUEUED_TIMEOUT_SECONDS = _int("JOB_QUEUED_TIMEOUT_SECONDS", 900)
    JOB_RETRY_BACKOFF_SECONDS = _float("JOB_RETRY_BACKOFF_SECONDS", 2.0)
    JOB_RETRY_BACKOFF_MAX_SECONDS = _float("JOB_RETRY_BACKOFF_MAX_SECONDS", 300.0)
    JOB_PROGRESS_INTERVAL_SECONDS = _float("JOB_PROGRESS_INTERVAL_SECONDS", 0.25)
    JOB_HEARTBEAT_SECONDS = _float("JOB_HEARTBEAT_SECONDS", 15.0)
    # Queued + running jobs one user may have; the next POST /jobs (or retry) gets 429.
    MAX_QUEUED_JOBS_PER_USER = _int("MAX_QUEUED_JOBS_PER_USER", 20)

    # Notifications (issue 5).
    NOTIFICATION_RATE_LIMIT_PER_HOUR = _int("NOTIFICATION_RATE_LIMIT_PER_HOUR", 50)
    NOTIFICATION_RETENTION_DAYS = _int("NOTIFICATION_RETENTION_DAYS", 30)
    NOTIFICATION_SWEEP_BATCH = _int("NOTIFICATION_SWEEP_BATCH", 1000)
    NOTIFICATION_DIGEST_MAX_ITEMS = _int("NOTIFICATION_DIGEST_MAX_ITEMS", 50)
    # A fan-out larger than this is pushed in batches of this size, one task each.
    NOTIFICATION_DISPATCH_BATCH = _int("NOTIFICATION_DISPATCH_BATCH", 1000)
    # The unread badge is exact up to this many (then "capped": the UI shows "1000+").
    NOTIFICATION_UNREAD_COUNT_CAP = _int("NOTIFICATION_UNREAD_COUNT_CAP", 1000)
    # Rows no push reached after this long are pushed by the beat sweep.
    NOTIFICATION_PUSH_GRACE_SECONDS = _int("NOTIFICATION_PUSH_GRACE_SECONDS", 60)

    # Email over SMTP; no MAIL_SERVER means email is off (in-app only).
    MAIL_SERVER = ENV.get("MAIL_SERVER") or None
    MAIL_PORT = _int("MAIL_PORT", 25)
    MAIL_USERNAME = ENV.get("MAIL_USERNAME") or None
    MAIL_PASSWORD = ENV.get("MAIL_PASSWORD") or None
    MAIL_USE_TLS = _bool("MAIL_USE_TLS", False)
    MAIL_USE_SSL = _bool("MAIL_USE_SSL", False)
    MAIL_FROM = ENV.get("MAIL_FROM", "Episode Control <no-reply@localhost>")
    MAIL_TIMEOUT_SECONDS = _int("MAIL_TIMEOUT_SECONDS", 10)

    # Real-time layer.
    SOCKETIO_ASYNC_MODE = ENV.get("SOCKETIO_ASYNC_MODE", "threading")
    # Browser origins allowed to call the REST API (Flask-CORS) and open sockets
    # (python-engineio), comma-separated; "*" any; empty: same origin only (app/cors.py).
    CORS_ORIGINS = ENV.get("CORS_ORIGINS", "*")
    # Reverse proxies in front of the app that set X-Forwarded-For/-Proto/-Host. 0: those
    # headers are ignored (anyone can send them), the client address is the TCP peer's.
    TRUSTED_PROXIES = max(0, _int("TRUSTED_PROXIES", 0))
    # Socket.IO message queue shared by every web process and worker (Redis).
    SOCKETIO_MESSAGE_QUEUE = ENV.get("SOCKETIO_MESSAGE_QUEUE") or REDIS_URL
    MAX_CONNECTIONS = _int("MAX_CONNECTIONS", 500)
    # Engine.IO heartbeat: the server pings every interval; a client silent for the timeout
    # after a ping is dropped (python-engineio's defaults).
    SOCKETIO_PING_INTERVAL = max(1, _int("SOCKETIO_PING_INTERVAL", 25))
    SOCKETIO_PING_TIMEOUT = max(1, _int("SOCKETIO_PING_TIMEOUT", 20))
    # Presence (app/services/presence.py): a socket's entry lives this long unless a
    # heartbeat or its web process's refresh (every third of it, at most 10 s) pushes it on;
    # a process killed without a goodbye loses its sockets' presence within it.
    PRESENCE_STALE_SECONDS = _float("PRESENCE_STALE_SECONDS", 30.0)
    # Sockets one user may hold across every web process (not per IP: offices share one).
    MAX_SOCKETS_PER_USER = _int("MAX_SOCKETS_PER_USER", 50)
    # Joins and leaves of a room are collected this long and sent as one flush.
    VIEWER_COALESCE_MS = _int("VIEWER_COALESCE_MS", 150)
    # Above this many viewers a room gets viewers_changed (count + first page) instead of
    # one viewer_joined / viewer_left per user.
    VIEWERS_BIG_ROOM = _int("VIEWERS_BIG_ROOM", 50)
    VIEWERS_PAGE_SIZE = _int("VIEWERS_PAGE_SIZE", 50)
    # A big room gets at most one viewers_changed per this interval (each reaches everyone).
    VIEWERS_BIG_ROOM_INTERVAL_MS = _int("VIEWERS_BIG_ROOM_INTERVAL_MS", 1000)
    # Socket handlers doing database/Redis work at once per web process (a storm queues in
    # memory instead of exhausting the pools), and how long one may wait for a slot.
    SOCKET_IO_CONCURRENCY = _int("SOCKET_IO_CONCURRENCY", 32)
    SOCKET_IO_WAIT_SECONDS = _float("SOCKET_IO_WAIT_SECONDS", 30.0)
    # Per-connection token buckets for client events: "event=burst/per_second,...".
    SOCKET_EVENT_LIMITS = ENV.get(
        "SOCKET_EVENT_LIMITS", "join=20/5,subscribe=20/5,set_status=5/1,heartbeat=5/1")
    # Reconnect replay (app/services/replay.py): the most recent emitted events kept in a
    # shared buffer (Redis, or process memory without it; 0 turns it off), and the most
    # events one reconnect replays; a client further behind gets resync_required.
    REPLAY_BUFFER_SIZE = _int("REPLAY_BUFFER_SIZE", 5000)
    REPLAY_LIMIT = _int("REPLAY_LIMIT", 1000)
    # How often a web process disconnects sockets whose access token has expired.
    SESSION_CHECK_SECONDS = _float("SESSION_CHECK_SECONDS", 2.0)
    # Per-message compression (permessage-deflate) on websockets: off, as in Node's
    # socket.io since v3. Browsers offer it on every connection, and accepting it keeps a
    # zlib compressor (~100 KB) per connection for small JSON envelopes (app/ws_compression.py).
    # When on, both LZ77 windows are capped at 2**bits bytes (9..15).
    SOCKETIO_WS_COMPRESSION = _bool("SOCKETIO_WS_COMPRESSION", False)
    SOCKETIO_WS_COMPRESSION_WINDOW_BITS = _int("SOCKETIO_WS_COMPRESSION_WINDOW_BITS", 11)
    # When on: no compressor kept between messages (smaller, worse ratio, more CPU per message).
    SOCKETIO_WS_COMPRESSION_NO_CONTEXT_TAKEOVER = _bool("SOCKETIO_WS_COMPRESSION_NO_CONTEXT_TAKEOVER", False)

    # Prometheus metrics (app/metrics.py, deploy/monitoring.md). PROMETHEUS_MULTIPROC_DIR is
    # read from the environment only (prometheus_client chooses its storage at import):
    # set it for every web process and worker so that /metrics reports them all.
    METRICS_ENABLED = _bool("METRICS_ENABLED", True)
    # /metrics answers a request carrying "Authorization: Bearer <METRICS_TOKEN>", or one
    # from an address in METRICS_ALLOW (comma-separated addresses or networks; the client
    # address honours X-Forwarded-For only behind TRUSTED_PROXIES). Empty: token only.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    METRICS_ALLOW = os.environ.get("METRICS_ALLOW", "127.0.0.1,::1")
    # /health/ready fails (503) when the oldest undelivered event that has not failed yet
    # is older than this (workers down or far behind); 0 turns the check off.
    HEALTH_READY_OUTBOX_LAG_SECONDS = _float("HEALTH_READY_OUTBOX_LAG_SECONDS", 300.0)

    # OpenAPI (flask-smorest).
    API_TITLE = "Episode Control"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api/v1"
    OPENAPI_JSON_PATH = "openapi.json"
    # Every operation needs the bearer access token unless it says ``security: []``
    # (``@blp.doc(security=[])`` on the public views: health, register, login, download).
    API_SPEC_OPTIONS = {
        "components": {"securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "An access token from POST /auth/login "
                                          "(POST /auth/refresh takes the refresh token)."},
        }},
        "security": [{"bearerAuth": []}],
    }

    @classmethod
    def celery(cls) -> dict:
        """Celery settings: Redis broker when configured, else the in-memory one."""
        broker = cls.REDIS_URL or "memory://"
        return {
            "broker_url": broker,
            "result_backend": None,
            "task_ignore_result": True,
            "task_serializer": "json",
            "accept_content": ["json"],
            "result_serializer": "json",
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 4,
            # Enqueueing happens after commit inside a request: when the broker is down,
            # fail fast and let the outbox re-delivery pick the event up later.
            "task_publish_retry": False,
            "broker_connection_timeout": 2,
            # max_retries 0: without it kombu retries a publish's connect for the whole
            # broker_connection_timeout (2 s per enqueue with the broker down). The
            # worker's own reconnect loop is broker_connection_max_retries, unaffected.
            "broker_transport_options": {"socket_connect_timeout": 2, "socket_timeout": 5,
                                         "max_retries": 0},
            "broker_connection_retry_on_startup": True,
            "task_always_eager": False,
            "timezone": "UTC",
        }


class DevelopmentConfig(Config):
    """The embedded default: everything in one process."""

    FIRST_USER_BECOMES_ADMIN = _bool("FIRST_USER_BECOMES_ADMIN", not ENV.get("DATABASE_URL"))


class TestConfig(Config):
    """Tests: a database per test run, eager Celery unless a test starts a real worker."""

    ENV_NAME = "testing"
    TESTING = True
    EMBEDDED_WORKER = False
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    SOCKETIO_ASYNC_MODE = "threading"
    # socketio.test_client cannot run over a message queue; the end-to-end tests start
    # real server and worker processes, which use Redis.
    SOCKETIO_MESSAGE_QUEUE = None
    # Rate limits stay on but generous: a test (a fuzzing run) may log in many times from
    # one address; tests/test_limits.py sets low limits and proves each one.
    RATELIMIT_LOGIN_PER_IP = RATELIMIT_LOGIN_PER_ACCOUNT = "1000 per minute"
    RATELIMIT_REGISTER_PER_IP = RATELIMIT_REFRESH_PER_USER = "1000 per minute"

    @classmethod
    def celery(cls) -> dict:
        settings = super().celery()
        settings.update(task_always_eager=True, task_eager_propagates=True)
        return settings


MIN_SECRET_BYTES = 32


class ProductionConfig(Config):
    """Production: refuses default or short secrets and an open CORS policy.

    An unset ``CORS_ORIGINS`` means same origin only: no CORS headers on the REST API and
    python-engineio's own same-origin check for sockets (never its "check off" mode).
    """

    ENV_NAME = "production"
    SOCKETIO_ASYNC_MODE = ENV.get("SOCKETIO_ASYNC_MODE", "eventlet")
    CORS_ORIGINS = ENV.get("CORS_ORIGINS", "")
    EMBEDDED_WORKER = _bool("EMBEDDED_WORKER", False)

    @classmethod
    def validate(cls) -> None:
        """Raise when the configuration is unsafe for production."""
        if cls.SECRET_KEY == DEFAULT_SECRET_KEY or cls.JWT_SECRET_KEY == DEFAULT_JWT_SECRET_KEY:
            raise RuntimeError("Production refuses the default SECRET_KEY / JWT_SECRET_KEY")
        for name in ("SECRET_KEY", "JWT_SECRET_KEY"):
            # HS256 keys shorter than the hash (32 bytes) are guessable offline from one token.
            if len(getattr(cls, name).encode()) < MIN_SECRET_BYTES:
                raise RuntimeError(f"Production refuses a {name} shorter than "
                                   f"{MIN_SECRET_BYTES} bytes")
        if "*" in cls.CORS_ORIGINS:
            # "*" alone or in the list is any origin; a pattern would be a regex to
            # Flask-CORS but a literal to python-engineio: name each origin.
            raise RuntimeError("Production refuses '*' in CORS_ORIGINS; list the origins")


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestConfig,
    "production": ProductionConfig,
}


def config_from_env() -> type[Config]:
    """The config class named by APP_ENV (development by default)."""
    return CONFIGS[ENV.get("APP_ENV", "development")]


def build_configs(environ: Mapping[str, str]) -> ModuleType:
    """The configuration classes (``Config``, ``DevelopmentConfig``, ``ProductionConfig``,
    ``TestConfig``, ``CONFIGS``) as ``environ`` would make them.

    A fresh copy of this module, not a reload: the classes every import already holds
    stay as they are, so a test can build a production config without undoing it after.
    """
    spec = importlib.util.spec_from_file_location("config_built", __file__)
    module = importlib.util.module_from_spec(spec)
    module._BUILD_ENVIRON = environ
    spec.loader.exec_module(module)
    return module
