"""One Redis client per process, or None when REDIS_URL is not configured."""
from __future__ import annotations

import redis
from flask import current_app

_clients: dict[str, redis.Redis] = {}


def get_redis() -> redis.Redis | None:
    """The shared client for the app's REDIS_URL (connection pool is thread-safe)."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True
        )
        _clients[url] = client
    return client
