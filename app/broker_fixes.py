"""A fix to kombu's Redis transport (kombu 5.7.0, celery 5.7.0, pinned) for losing Redis.

When the broker connection drops while a worker holds unacknowledged messages (``acks_late``
tasks running or prefetched), Celery collects the connection, which detaches its channels
from their transport. Two things then still reach through a detached channel: closing it
restores the unacked messages, and a task that was running finishes and acknowledges its
message. Both build a Redis client from the channel's connection parameters, find ``None``
and raise ``AttributeError``, which is not a connection error: it escapes Celery's
``ignore_errors`` / ``ack_log_error`` and the worker dies ("Unrecoverable error") instead
of reconnecting when Redis returns (seen in ``tests/test_faults_e2e.py``).

Here a detached channel raises the transport's own ``ConnectionError``, which Celery
handles as it does any broker failure (logged, the worker reconnects). The messages
concerned are in Redis's unacked hash (the visibility timeout restores them) or were
lost with Redis; either way the outbox re-delivers their events, and tasks are idempotent.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_original_connparams = kombu_redis.Channel._connparams


def _connparams(self, asynchronous=False):
    transport = self.connection
    if transport is None or transport.client is None:
        raise RedisConnectionError("the broker connection of this channel is closed")
    return _original_connparams(self, asynchronous=asynchronous)


def install() -> None:
    """Idempotent: patch ``kombu.transport.redis.Channel._connparams`` once."""
    kombu_redis.Channel._connparams = _connparams
