"""One Redis client per process, or None when REDIS_URL is not configured."""
from __future__ import annotations

import redis
from flask import current_app

_clients: dict[str, redis.Redis] = {}


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
        # A blocking pool: when every connection is in use (a storm of connects or
        # disconnects, one green thread each) the next caller waits up to
        # REDIS_POOL_TIMEOUT for one instead of failing at once with "Too many connections".
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=current_app.config.get("REDIS_POOL_SIZE", 128),
            timeout=current_app.config.get("REDIS_POOL_TIMEOUT", 5.0),
            socket_connect_timeout=2, socket_timeout=5, decode_responses=True,
        )
        client = redis.Redis(connection_pool=pool)
        _clients[url] = client
    return client
