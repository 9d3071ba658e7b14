"""python-socketio client managers that find a socket's rooms without scanning every room.

python-socketio (pinned in requirements.txt) keeps ``rooms[namespace][room] -> {sid: eio_sid}``
and nothing from a socket to its rooms, so each disconnect copies and scans every room of
the namespace, and every socket has a room of its own: one disconnect costs O(connections),
a graceful shutdown of N sockets O(N²) (9,000 sockets: 24 s of a single core, measured).
The mixin keeps the reverse index ``(namespace, sid) -> rooms`` beside the library's map,
through the three primitives every room change goes through (enter, leave, close), and
answers ``get_rooms`` and ``disconnect`` from it.
"""
from __future__ import annotations

import logging
import time

from socketio import Manager, RedisManager

log = logging.getLogger(__name__)


class IndexedRoomsMixin:
    """Reverse room index for a ``socketio.BaseManager`` subclass."""

    rooms: dict
    callbacks: dict
    pending_connect: dict
    pending_disconnect: dict

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set] = {}

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def get_rooms(self, sid, namespace):
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid, namespace, **kwargs):
        """The library's ``basic_disconnect``, with the rooms taken from the index."""
        if namespace not in self.rooms:
            return
        # Any order will do, but the None room (sid -> eio_sid, what is_connected reads) last.
        rooms = sorted(self._rooms_of.get((namespace, sid), ()), key=lambda r: r is None)
        for room in rooms:
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            if namespace in pending and sid in pending[namespace]:
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]


class IndexedManager(IndexedRoomsMixin, Manager):
    """One process, no message queue (the embedded default and the unit tests)."""


class IndexedRedisManager(IndexedRoomsMixin, RedisManager):
    """Web processes sharing a Redis message queue; the listener outlives Redis restarts.

    python-socketio's listener (pinned 5.18.1) does reconnect, but its wait doubles from
    1 s up to 60 s and never shrinks while Redis stays down: after a 40 s outage this
    process could stay deaf to every other process's emits for up to another minute. Here
    the wait starts at 0.25 s and is capped at ``LISTEN_RETRY_MAX_SECONDS``, so the
    process hears the queue again within that long of Redis coming back.
    """

    LISTEN_RETRY_MAX_SECONDS = 2.0

    def resync_local_clients(self) -> None:
        """Tell this process's sockets they may have missed events: ``resync_required``.

        A delivery that cannot publish is postponed (nothing lost while Redis is down), but
        one published after Redis is back and before this process subscribed again never
        reaches its sockets, and pub/sub keeps nothing. The client reloads over REST (or
        reconnects with ``last_event_id``), as for any other resync. Sent locally only.
        """
        envelope = {"id": None, "event": "resync_required",
                    "data": {"reason": "message_queue_reconnected"}, "actor": None,
                    "timestamp": None}
        for namespace in list(self.rooms):
            try:
                Manager.emit(self, "resync_required", envelope, namespace=namespace)
            except Exception:  # noqa: BLE001 - one namespace failing must not stop the listener
                log.exception("resync_required to %s failed", namespace)

    def _redis_listen_with_retries(self):  # the library's loop, with the capped wait
        retry_sleep = 0.25
        failed = False
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                if failed:
                    log.warning("Socket.IO message queue: listening again")
                    failed = False
                    self.resync_local_clients()
                retry_sleep = 0.25
                yield from self.pubsub.listen()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a wait
                if not failed:
                    log.warning("Socket.IO message queue lost (%s); reconnecting", exc)
                failed = True
                try:
                    if self.pubsub is not None:
                        self.pubsub.close()  # its connection is dead; do not leak it
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(retry_sleep)  # green under eventlet (patched)
                retry_sleep = min(retry_sleep * 2, self.LISTEN_RETRY_MAX_SECONDS)
