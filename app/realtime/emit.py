"""The one module that emits Socket.IO events: only after commit, always to a room.

Every server event has one envelope ``{"id", "event", "data", "actor", "timestamp"}``.
Rooms are named here and nowhere else. A leaf: it imports no service (delivery hands it
the events and their actors). Web processes and Celery workers both call this module;
with REDIS_URL the emit goes through the Redis message queue, so it reaches a client
connected to any web process.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from socketio import RedisManager

from app.extensions import socketio
from app.models import DomainEvent, User, isoformat, utcnow

log = logging.getLogger(__name__)

FEED, EPISODES, JOBS, ADMIN = "/feed", "/episodes", "/jobs", "/admin"
NAMESPACES = (FEED, EPISODES, JOBS, ADMIN)
ROOM_ALL = "all"  # every socket of a namespace joins it (e.g. episode_created)
ROOM_ADMINS = "admins"

Route = tuple[str, str]  # (namespace, room)
# A user's own notifications and read receipts: to that user's rooms only, never to
# /admin (an admin's socket must not get another user's inbox).
PRIVATE_EVENTS = frozenset({"notification", "notification_read"})


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def episode_room(episode_id: int) -> str:
    return f"episode:{episode_id}"


def job_room(job_id: int) -> str:
    return f"job:{job_id}"


def envelope(name: str, data: dict, *, event_id: int | None, actor: dict | None,
             timestamp: str | None = None) -> dict:
    return {
        "id": event_id,
        "event": name,
        "data": data,
        "actor": actor,
        "timestamp": timestamp or isoformat(utcnow()),
    }


def emit_to(routes: Iterable[Route], name: str, payload: dict) -> None:
    """Emit one envelope to each (namespace, room); never to a whole namespace."""
    emit_many((route, name, payload) for route in routes)


def emit_many(messages: Iterable[tuple[Route, str, dict]]) -> int:
    """Emit many (route, event, envelope) messages; with Redis, in one pipelined round trip.

    Consecutive messages that carry the same envelope to rooms of one namespace go out as
    one emit to the list of rooms: python-socketio sends it once to each socket in any of
    them, so a client in two of the rooms (a job's and its episode's) gets the event once,
    and every web process decodes one message instead of one per room.

    python-socketio's ``RedisManager`` publishes each emit with its own round trip and, when
    Redis is down, only logs ("giving up"). Here the messages are built exactly as its
    ``PubSubManager.emit`` builds them (socketio pinned in requirements.txt), handed to this
    process's own clients, and published to the other processes in one pipeline, whose
    failure raises: the delivery then fails and is retried (at-least-once), instead of an
    emit being lost silently. Returns the number of emits (room lists count once).
    """
    manager = socketio.server.manager
    batch: list[tuple[str, list[str], str, dict]] = []
    for (namespace, room), name, payload in messages:
        if not room:
            raise ValueError("emits always name a room")
        last = batch[-1] if batch else None
        if last is not None and last[0] == namespace and last[2] == name and last[3] is payload:
            if room not in last[1]:
                last[1].append(room)
        else:
            batch.append((namespace, [room], name, payload))
    if not isinstance(manager, RedisManager):
        for namespace, rooms, name, payload in batch:
            socketio.emit(name, payload, namespace=namespace,
                          to=rooms[0] if len(rooms) == 1 else rooms)
        return len(batch)
    published = []
    for namespace, rooms, name, payload in batch:
        message = {"method": "emit", "event": name, "data": [payload], "binary": False,
                   "namespace": namespace, "room": rooms[0] if len(rooms) == 1 else rooms,
                   "skip_sid": None, "callback": None, "host_id": manager.host_id}
        if manager.server is not None:
            manager._handle_emit(message)  # this process's own clients
        published.append(manager.json.dumps(message))
    if published:
        if getattr(manager, "redis", None) is None or not getattr(manager, "connected", False):
            manager._redis_connect()
        pipe = manager.redis.pipeline(transaction=False)
        for data in published:
            pipe.publish(manager.channel, data)
        pipe.execute()
    return len(batch)


def routes_for(event: DomainEvent) -> list[Route]:
    """The audience of a domain event, by its name (admins hear everything)."""
    payload = event.payload or {}
    name = event.name
    routes: list[Route] = []
    if "_batch" in payload:  # one user room each (notification pushes of one claim)
        routes.extend((payload["_batch"]["namespace"], user_room(user_id))
                      for user_id, _own in payload["_batch"]["users"])
    elif payload.get("_rooms"):  # explicitly addressed (admin broadcast)
        routes.extend((ns, room) for ns, room in payload["_rooms"])
    elif name == "episode_created":
        routes.append((EPISODES, ROOM_ALL))
    elif name.startswith("episode_") or name.startswith("file_") or name.startswith("viewer_"):
        if payload.get("episode_id") is not None:
            routes.append((EPISODES, episode_room(payload["episode_id"])))
    elif name.startswith("job_"):
        if name == "job_processor_started":
            routes.append((JOBS, ROOM_ALL))
        if payload.get("job_id") is not None:
            routes.append((JOBS, job_room(payload["job_id"])))
        if payload.get("episode_id") is not None:
            routes.append((JOBS, episode_room(payload["episode_id"])))
    elif name == "presence_changed":
        routes.append((FEED, ROOM_ALL))
    for user_id in payload.get("notify_user_ids", ()):  # events addressed to users
        routes.append((FEED, user_room(user_id)))
    if name not in PRIVATE_EVENTS:
        routes.append((ADMIN, ROOM_ADMINS))
    return routes


def event_envelope(event: DomainEvent, actor: User | None) -> dict:
    payload = event.payload or {}
    if "_batch" in payload:  # one envelope per user: never all users' data in one
        raise ValueError("a _batch event has one envelope per user (batch_envelope)")
    if "_rooms" in payload:  # addressed, its envelope prepared ("_actor", "_timestamp": optional)
        return envelope(event.name, payload.get("data") or {}, event_id=event.id,
                        actor=payload["_actor"] if "_actor" in payload
                        else {"id": actor.id, "name": actor.name} if actor else None,
                        timestamp=payload.get("_timestamp") or isoformat(event.created_at))
    data = {k: v for k, v in payload.items() if k != "notify_user_ids"}
    if event.changes is not None:
        data.setdefault("changes", event.changes)
    return envelope(
        event.name, data, event_id=event.id,
        actor={"id": actor.id, "name": actor.name} if actor is not None else None,
        timestamp=isoformat(event.created_at),
    )


def batch_envelope(event_id: int, name: str, batch: dict, own: dict) -> dict:
    """One user's envelope of a ``_batch`` event: the shared ``base`` and its ``own`` parts.

    Every user of the batch gets the event's id: each user appears once per event, so it is
    still one id per envelope a client sees, increasing, as ``last_event_id`` needs.
    """
    base = batch["base"]  # own keys first: a broadcast's data keeps the order of a single push
    return envelope(name, {**own.get("data", {}), **base["data"]}, event_id=event_id,
                    actor=own["actor"] if "actor" in own else base.get("actor"),
                    timestamp=own.get("timestamp") or base.get("timestamp"))


def batch_envelope_for(entry: dict, namespace: str, allowed: Callable[[str], bool]) -> dict | None:
    """The envelope of a ``batch`` history entry for a socket of ``namespace`` that may see
    the rooms ``allowed`` accepts: its user's own, never another user's; None if none."""
    batch = entry["batch"]
    if batch["namespace"] != namespace:
        return None
    for user_id, own in batch["users"]:
        if allowed(user_room(user_id)):
            return batch_envelope(entry["id"], entry["name"], batch, own)
    return None


def history_entry(event: DomainEvent, actor: User | None) -> dict:
    """What replay keeps of a delivered event: ``{"id", "name", "routes", "envelope"}``, or
    for a ``_batch`` event ``{"id", "name", "routes": [], "batch"}`` (its compact payload:
    replay builds the one envelope a socket may see, not one per user)."""
    payload = event.payload or {}
    if "_batch" in payload:
        return {"id": event.id, "name": event.name, "routes": [], "batch": payload["_batch"]}
    return {"id": event.id, "name": event.name,
            "routes": [list(route) for route in routes_for(event)],
            "envelope": event_envelope(event, actor)}

