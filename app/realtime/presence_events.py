"""Presence events, coalesced: what a window of joins, leaves and status changes tells a room.

Presence events are ephemeral: they describe a state (who is here now) that a client can
always read again (the join ack, ``GET /episodes/<id>``, ``GET /presence/...``). They do
not go through the outbox: a join costs no database transaction, and a room filling up
does not cost N² outbox rows and emits. Their envelope has ``"id": null`` and they are
never replayed (a reconnecting client gets the current viewers in its join ack).

Each web process collects the changes of ``VIEWER_COALESCE_MS`` (150 ms) and then sends,
per room (after Phoenix Presence's ``presence_diff``, with the net change: a user who joined
and left within the window is not mentioned):

- a room of at most ``VIEWERS_BIG_ROOM`` visible viewers: ``viewer_joined`` /
  ``viewer_left``, one per user that came or went (the contract's events);
- a bigger room: one ``viewers_changed`` ``{resource_type, resource_id, episode_id, count,
  viewers (first page), joins, leaves (at most a page each), joins_count, leaves_count}``,
  at most once per ``VIEWERS_BIG_ROOM_INTERVAL_MS`` (1 s) per room: each one goes to every
  socket of the room, so a room of 5,000 filling up must not get one every 150 ms.

``presence_changed`` (on /feed ``all``) is coalesced per user in the same window: the last
state wins. Every message also goes to /admin ``admins`` (admins hear every event).
All messages of a flush go out in one pipelined emit (``emit.emit_many``).
"""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from time import monotonic

from flask import Flask, current_app

from app.extensions import socketio
from app.models import isoformat
from app.realtime.emit import ADMIN, EPISODES, FEED, ROOM_ADMINS, ROOM_ALL, emit_many, envelope
from app.services.presence_store import get_store, split_resource

log = logging.getLogger(__name__)


class PresenceEvents:
    """One per app and process: pending changes per room, flushed after the window."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._rooms: dict[str, dict[int, int]] = {}  # resource → {user_id: +1 joined / -1 left}
        self._names: dict[int, str] = {}
        self._presence: dict[int, dict] = {}  # user_id → latest presence_changed payload
        self._scheduled = False
        self._big_sent: dict[str, float] = {}  # resource → when its last viewers_changed went

    @property
    def window(self) -> float:
        return max(0, self.app.config.get("VIEWER_COALESCE_MS", 150)) / 1000

    def viewer(self, resource: str, user_id: int, name: str, joined: bool) -> None:
        with self._lock:
            changes = self._rooms.setdefault(resource, {})
            step = 1 if joined else -1
            if changes.get(user_id) == -step:
                del changes[user_id]  # joined and left (or left and came back) within the window
            else:
                changes[user_id] = step
            self._names[user_id] = name
        self._schedule()

    def presence_changed(self, payload: dict) -> None:
        with self._lock:
            self._presence[payload["user_id"]] = payload
        self._schedule()

    def _schedule(self) -> None:
        if self.window == 0:
            self.flush()
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        socketio.start_background_task(self._flush_later)

    def _flush_later(self) -> None:
        socketio.sleep(self.window)
        with self._lock:
            self._scheduled = False
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - presence is best effort; next change resyncs
            log.warning("presence flush failed: %s", exc)

    def _hold(self, held: dict[str, dict[int, int]], names: dict[int, str]) -> None:
        """Put a big room's changes back for its next turn (merged with newer ones)."""
        with self._lock:
            for resource, changes in held.items():
                pending = self._rooms.setdefault(resource, {})
                for user_id, step in changes.items():
                    if pending.get(user_id) == -step:
                        del pending[user_id]
                    else:
                        pending.setdefault(user_id, step)
            for user_id, name in names.items():
                self._names.setdefault(user_id, name)
        self._schedule()

    def flush(self) -> int:
        """Send what the window collected; returns the number of messages."""
        with self._lock:
            rooms, self._rooms = self._rooms, {}
            names, self._names = self._names, {}
            presence, self._presence = self._presence, {}
        messages: list = []
        if rooms:
            with self.app.app_context():
                store = get_store()
                big = self.app.config.get("VIEWERS_BIG_ROOM", 50)
                page = self.app.config.get("VIEWERS_PAGE_SIZE", 50)
                big_every = self.app.config.get("VIEWERS_BIG_ROOM_INTERVAL_MS", 1000) / 1000
                held: dict[str, dict[int, int]] = {}
                for resource, changes in rooms.items():
                    if not changes:
                        continue
                    kind, ident = split_resource(resource)
                    routes = [(ADMIN, ROOM_ADMINS)]
                    if kind == "episode":
                        routes.insert(0, (EPISODES, f"episode:{ident}"))
                    base = {f"{kind}_id": ident, "resource_type": kind, "resource_id": ident}
                    count, first = store.viewers(resource, page)
                    if count > big and monotonic() - self._big_sent.get(resource, 0) < big_every:
                        held[resource] = changes  # a big room hears at most once a second
                        continue
                    if count > big:
                        self._big_sent[resource] = monotonic()
                        if len(self._big_sent) > 10_000:
                            self._big_sent.clear()
                        joins = [{"id": u, "name": names.get(u, "")}
                                 for u, s in sorted(changes.items()) if s > 0]
                        leaves = [{"id": u, "name": names.get(u, "")}
                                  for u, s in sorted(changes.items()) if s < 0]
                        data = {**base, "count": count, "viewers": first,
                                "joins": joins[:page], "leaves": leaves[:page],
                                "joins_count": len(joins), "leaves_count": len(leaves)}
                        body = envelope("viewers_changed", data, event_id=None, actor=None)
                        messages += [(route, "viewers_changed", body) for route in routes]
                        continue
                    for user_id, step in sorted(changes.items()):
                        user = {"id": user_id, "name": names.get(user_id, "")}
                        name = "viewer_joined" if step > 0 else "viewer_left"
                        body = envelope(name, {**base, "user": user}, event_id=None, actor=user)
                        messages += [(route, name, body) for route in routes]
                if held:
                    self._hold(held, names)
        for payload in presence.values():
            body = envelope("presence_changed", payload, event_id=None,
                            actor={"id": payload["user_id"], "name": payload["name"]})
            messages += [((FEED, ROOM_ALL), "presence_changed", body),
                         ((ADMIN, ROOM_ADMINS), "presence_changed", body)]
        if messages:
            emit_many(messages)
        return len(messages)


def presence_events(app: Flask | None = None) -> PresenceEvents:
    """This process's coalescer for the app (created on first use)."""
    app = app or current_app._get_current_object()
    events = app.extensions.get("presence_events")
    if events is None:
        events = app.extensions["presence_events"] = PresenceEvents(app)
    return events


def presence_payload(user_id: int, name: str, status: str, message: str | None,
                     last_activity: float | None) -> dict:
    """The presence of one user as others see it (``GET /presence/users/<id>``'s fields)."""
    return {"user_id": user_id, "name": name, "status": status,
            "message": message if status != "offline" else None,
            "last_activity_at": isoformat(datetime.fromtimestamp(last_activity, UTC))
            if last_activity else None}
