"""One Redis client per process, or None when REDIS_URL is not configured.

Redis is a cache and a transport here, never the only copy of anything, so every caller
has a fallback and a dead Redis must cost next to nothing per request. Three things make
it so:

- short socket timeouts and no client-side retries (redis-py retries a failed command up
  to ten times with backoff by default: seconds per request against a silent host);
- a circuit breaker: the first connection error or timeout marks Redis down for
  ``REDIS_RETRY_SECONDS``, and while it is down connecting fails at once without touching
  the network; after that one caller tries again (a success closes the breaker);
- writes to make once Redis is back (``when_redis_returns``): cache writes that could not
  be made while it was down (a revocation's blocklist key, a user entry to drop), retried
  by a small thread until they land.

Callers catch ``redis.RedisError`` and take their no-Redis path.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


class CircuitBreaker:
    """Open (Redis presumed down) for ``retry_seconds`` after a connection failure."""

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self.open_until = 0.0
        self.down_since: float | None = None
        self._pending: list[Callable[[redis.Redis], None]] = []
        self._lock = threading.Lock()

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    @property
    def down(self) -> bool:
        """Redis failed and has not answered since (the breaker may be half-open)."""
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Redis unavailable, falling back for %.1f s: %s", self.retry_seconds, exc)
        self.open_until = time.monotonic() + self.retry_seconds

    def succeeded(self) -> bool:
        """Close the breaker (Redis answered); True if it was open."""
        if self.down_since is None:
            return False
        log.warning("Redis is back after %.1f s", time.monotonic() - self.down_since)
        self.down_since = None
        self.open_until = 0.0
        return True

    def defer(self, job: Callable[[redis.Redis], None]) -> None:
        with self._lock:
            if len(self._pending) < 10_000:  # bounded: the TTLs of the caches bound the rest
                self._pending.append(job)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def take_pending(self) -> list[Callable[[redis.Redis], None]]:
        with self._lock:
            jobs, self._pending = self._pending, []
        return jobs


class GuardedConnection(redis.Connection):
    """A connection that reports failures to its client's breaker and refuses while open."""

    def __init__(self, *args, breaker: CircuitBreaker, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = breaker

    def connect(self) -> None:
        if self._sock is not None:
            return
        if self.breaker.is_open():
            raise redis.ConnectionError("Redis is marked unavailable (circuit open)")
        try:
            super().connect()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.breaker.failed(exc)
            raise

    def send_packed_command(self, command, check_health=True) -> None:
        if self._sock is not None and self.breaker.is_open():
            # Another connection just failed: this pooled one would only wait out its own
            # timeout against the same stalled server.
            self.disconnect()
            raise redis.ConnectionError("Redis is marked unavailable (circuit open)")
        try:
            super().send_packed_command(command, check_health)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.breaker.failed(exc)
            raise

    def read_response(self, *args, **kwargs):
        try:
            response = super().read_response(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.breaker.failed(exc)
            raise
        if self.breaker.down:
            self.breaker.succeeded()
        return response


def _retry_pending(client: redis.Redis, breaker: CircuitBreaker) -> None:
    """Until the deferred writes are done: wait, ping, and once Redis answers, write them.

    A thread of its own, so the writes land within moments of Redis coming back even if
    this process gets no traffic (green under eventlet, which patches threading).
    """
    try:
        while breaker.has_pending:
            time.sleep(max(0.2, breaker.retry_seconds / 2))
            try:
                client.ping()
            except redis.RedisError:
                continue
            for job in breaker.take_pending():
                try:
                    job(client)
                except redis.RedisError as exc:
                    log.warning("deferred Redis write failed, will retry: %s", exc)
                    breaker.defer(job)
    finally:
        with _lock:
            _retriers.discard(id(breaker))


_retriers: set[int] = set()


def breaker_of(client: redis.Redis) -> CircuitBreaker | None:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("breaker")


def make_client(url: str, *, connect_timeout: float = 0.5, socket_timeout: float = 1.0,
                retry_seconds: float = 2.0, max_connections: int = 128,
                pool_timeout: float = 5.0) -> redis.Redis:
    """A client with short timeouts, no retries and a circuit breaker (see the module doc).

    The pool blocks for a free connection (up to ``pool_timeout``) instead of failing at
    once with "Too many connections" when a storm's green threads hold them all.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout,
        connection_class=GuardedConnection, breaker=CircuitBreaker(retry_seconds),
        socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0), decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


def get_redis() -> redis.Redis | None:
    """The shared client for the app's REDIS_URL (connection pool is thread-safe).

    The pool blocks for a free connection (up to ``REDIS_POOL_TIMEOUT``) instead of failing:
    redis-py's default pool raises "Too many connections" past 100, which a web process
    with thousands of green threads reached in a reconnect storm (bench/realtime.py (b)).
    """
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                config = current_app.config
                client = make_client(url, connect_timeout=config["REDIS_CONNECT_TIMEOUT"],
                                     socket_timeout=config["REDIS_SOCKET_TIMEOUT"],
                                     retry_seconds=config["REDIS_RETRY_SECONDS"],
                                     max_connections=config["REDIS_POOL_SIZE"],
                                     pool_timeout=config["REDIS_POOL_TIMEOUT"])
                _clients[url] = client
    return client


def redis_down() -> bool:
    """Redis is configured and this process last found it unavailable."""
    client = get_redis()
    breaker = breaker_of(client) if client is not None else None
    return breaker is not None and breaker.down


def when_redis_returns(job: Callable[[redis.Redis], None]) -> bool:
    """Run ``job(client)`` once Redis answers again (in this process; best effort).

    False when there is no Redis to wait for (not configured).
    """
    client = get_redis()
    breaker = breaker_of(client) if client is not None else None
    if breaker is None:
        return False
    breaker.defer(job)
    with _lock:
        if id(breaker) in _retriers:
            return True
        _retriers.add(id(breaker))
    threading.Thread(target=_retry_pending, args=(client, breaker), name="redis-deferred-writes",
                     daemon=True).start()
    return True


def pending_writes() -> bool:
    """Writes to Redis are waiting for it to come back (this process's view is incomplete)."""
    client = get_redis()
    breaker = breaker_of(client) if client is not None else None
    return breaker is not None and breaker.has_pending
