"""Real-time administration: stats, force disconnect, broadcast (admin)."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user
from flask_smorest import Blueprint
from marshmallow import fields, validate

from app.api.schemas import StrictSchema
from app.auth import role_required
from app.realtime import connections
from app.realtime.emit import NAMESPACES, ROOM_ALL
from app.services import events
from app.services import presence as presence_service

blp = Blueprint("realtime", __name__, description="Real-time administration")


class BroadcastSchema(StrictSchema):
    namespace = fields.String(required=True, validate=validate.OneOf(NAMESPACES))
    room = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 128))
    event = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_:]{0,63}$"))
    data = fields.Dict(load_default=dict)


@blp.route("/realtime/stats")
@role_required("admin")
def stats():
    """Connections per namespace (all processes), this process's rooms, users online."""
    body = presence_service.stats()
    body["this_process"] = {
        "server_id": connections.SERVER_ID,
        "clients": connections.client_count(),
        "transports": connections.transport_count(),
        "sockets": len(connections.all_connections()),
        "rooms": connections.local_rooms(),
    }
    return jsonify(body)


@blp.route("/realtime/connections/<sid>", methods=["DELETE"])
@role_required("admin")
def force_disconnect(sid: str):
    """Disconnect a socket wherever it is connected (through the message queue)."""
    presence_service.force_disconnect(sid)
    return "", 204


@blp.route("/realtime/broadcast", methods=["POST"])
@role_required("admin")
@blp.arguments(BroadcastSchema)
def broadcast(data):
    """Send an event to a room of a namespace (default: everyone in it), via the outbox."""
    room = data.get("room") or ROOM_ALL
    event = events.broadcast(current_user, namespace=data["namespace"], room=room,
                             name=data["event"], data=data["data"])
    return jsonify({"id": event.id, "namespace": data["namespace"], "room": room,
                    "event": data["event"]}), 202
