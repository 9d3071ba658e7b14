"""Presence over REST: my status, anyone's presence, who is online, viewers, stats."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint

from app.api.schemas import StatusSchema
from app.services import activity as activity_service
from app.services import presence as presence_service

blp = Blueprint("presence", __name__, description="Presence")

PRESENCE_EVENTS_DOC = """
## Socket.IO presence (issue 12)

Presence is ephemeral (sockets with a TTL of `PRESENCE_STALE_SECONDS`, in Redis or process
memory). Its events do not go through the outbox: their envelope has `"id": null` and they
are never replayed; a (re)connecting client reads the current state from the `join` ack,
`GET /episodes/{id}` (`viewers`) or `GET /presence/...`.

- `/episodes` `join {episode_id}` ack: `{"ok": true, "viewers": [{id, name}] (the first
  VIEWERS_PAGE_SIZE by id), "viewer_count"}`; refused:
  `{"ok": false, "error": {"code", "message", "details"}}` with code
  `validation_error`, `not_found`, `rate_limited` (details `{event, retry_after}`) or
  `unavailable` (try again).
- Viewer events per room, coalesced over `VIEWER_COALESCE_MS` (net change per user: a user is
  announced once however many tabs they have; a join and a leave in one window cancel):
  rooms of at most `VIEWERS_BIG_ROOM` viewers get `viewer_joined` / `viewer_left`
  `{episode_id, resource_type, resource_id, user: {id, name}}`; bigger rooms get one
  `viewers_changed` `{episode_id, resource_type, resource_id, count, viewers (first
  VIEWERS_PAGE_SIZE by id), joins, leaves (at most a page each), joins_count, leaves_count}`
  per window instead. Treat `viewers_changed` as a snapshot (count + first page).
- `presence_changed` on `/feed` `{user_id, name, status, message, last_activity_at}`,
  coalesced per user per window (the last state wins).
- Invisible users (chosen status `offline`) are never shown to others: not as viewers, not
  in counts, `GET /presence/online` or stats; to others they look offline with no message,
  last activity or viewing.
- Client events `join`, `subscribe`, `set_status`, `heartbeat` are rate limited per
  connection (`SOCKET_EVENT_LIMITS`); over the limit the ack is `rate_limited`.
- Connect refusals arrive as `connect_error` `{"message", "data": {"code", "message"}}`; codes
  include `too_many_connections` (per web process) and `too_many_user_connections`
  (`MAX_SOCKETS_PER_USER` sockets of one user across every process).
"""


def describe_realtime(spec) -> None:
    """Add the Socket.IO presence contract to the OpenAPI description (info.description)."""
    info = spec.options.setdefault("info", {})
    if PRESENCE_EVENTS_DOC not in info.get("description", ""):
        info["description"] = info.get("description", "") + PRESENCE_EVENTS_DOC


@blp.route("/presence/me")
@jwt_required()
def my_presence():
    """The caller's presence."""
    return jsonify(presence_service.get_presence(current_user.id, current_user.id))


@blp.route("/presence/me", methods=["PUT"])
@jwt_required()
@blp.arguments(StatusSchema)
def set_my_presence(data):
    """Set status (online, away, busy, do_not_disturb, offline) and message."""
    user_id = current_user.id
    presence_service.set_status(current_user, data["status"], data.get("message"))
    return jsonify(presence_service.get_presence(user_id, user_id))


@blp.route("/presence/users/<int:user_id>")
@jwt_required()
def user_presence(user_id: int):
    """Another user's status, last activity and what they are viewing (an invisible user,
    status offline by choice, looks offline: no message, last activity or viewing)."""
    return jsonify(presence_service.get_presence(user_id, current_user.id))


@blp.route("/presence/online")
@jwt_required()
def online():
    """Everyone shown online (invisible users are not listed)."""
    return jsonify({"items": presence_service.online_users(), "next_cursor": None})


@blp.route("/presence/stats")
@jwt_required()
def stats():
    """Counts by status and connections."""
    return jsonify(presence_service.stats())


@blp.route("/presence/<resource_type>/<int:resource_id>/viewers")
@jwt_required()
def viewers(resource_type: str, resource_id: int):
    """Who is viewing a resource now: the first 200 visible viewers by user id."""
    activity_service.check_resource_visible(current_user, resource_type, resource_id)
    return jsonify({"items": presence_service.viewers_of(resource_type, resource_id)})
