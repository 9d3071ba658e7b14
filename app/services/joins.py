"""Sockets coming in: a connect's registration, and a join of an episode's room, each in one call.

A connect, once its token is read and this process has room for it, is seen by presence
(which refuses a user over ``MAX_SOCKETS_PER_USER``) and then tracked for the session's end
(``control``): :func:`open_socket`.

The handler parses, rate-limits and acks; the join's work is here, in its order: the
episode must exist (``rooms``), then the socket enters the room (with the replay of what it
missed), then it shows up among the episode's viewers (``presence``). Entering the
Socket.IO room and sending to the socket need the handler's request, so the handler hands
that step in as ``enter``.
"""
from __future__ import annotations

from collections.abc import Callable

from app.errors import NotFound
from app.realtime import control
from app.services import presence, rooms


def open_socket(*, sid: str, namespace: str, server_id: str, user_id: int, name: str,
                token: str, since: float) -> bool:
    """Register a connected socket: False when presence refuses it (the user's cap).

    Tracked only once accepted, so a session that ends while it connects still ends it
    (``control.track`` compares the end with ``since``).
    """
    if not presence.socket_connected(sid=sid, user_id=user_id, name=name, namespace=namespace,
                                     server_id=server_id):
        return False
    control.track(sid, namespace, user_id, token, since)
    return True


class EpisodeMissing(NotFound):
    """The episode a join names does not exist (told apart from any other 404 underneath)."""


def join_episode(*, sid: str, user_id: int, name: str, episode_id: int,
                 enter: Callable[[], None]) -> dict | None:
    """Check, enter, be seen: the viewers (as ``presence.view`` returns them), or None when
    the socket left presence meanwhile (disconnecting). EpisodeMissing for an unknown episode,
    before the socket enters anything."""
    if not rooms.episode_exists(episode_id):
        raise EpisodeMissing("Episode not found")
    enter()
    return presence.view(sid=sid, user_id=user_id, name=name, resource_type="episode",
                         resource_id=episode_id)
