"""Episodes: CRUD and publish. Viewers read; editors and admins change."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint

from app.api.schemas import EpisodeCreateSchema, EpisodeListQuerySchema, EpisodeUpdateSchema
from app.auth import role_required
from app.extensions import db
from app.models import Episode
from app.pagination import paginate
from app.serializers import episode_dict
from app.services import episodes as episode_service

blp = Blueprint("episodes", __name__, description="Episodes")


@blp.route("/episodes")
@jwt_required()
@blp.arguments(EpisodeListQuerySchema, location="query")
def list_episodes(args):
    """Episodes, newest first; filter by status or season."""
    query = db.select(Episode)
    if args.get("status"):
        query = query.where(Episode.status == args["status"])
    if args.get("season") is not None:
        query = query.where(Episode.season == args["season"])
    return jsonify(paginate(query, Episode.id, episode_dict,
                            cursor=args["cursor"], limit=args["limit"]))


@blp.route("/episodes", methods=["POST"])
@role_required("editor")
@blp.arguments(EpisodeCreateSchema)
def create_episode(data):
    """Create an episode (editor)."""
    return jsonify(episode_dict(episode_service.create_episode(current_user, data))), 201


@blp.route("/episodes/<int:episode_id>")
@jwt_required()
def get_episode(episode_id: int):
    """The episode plus who is viewing it now."""
    episode, viewers = episode_service.get_episode_with_viewers(episode_id)
    return jsonify({**episode_dict(episode), "viewers": viewers})


@blp.route("/episodes/<int:episode_id>", methods=["PATCH"])
@role_required("editor")
@blp.arguments(EpisodeUpdateSchema)
def update_episode(data, episode_id: int):
    """Change fields of an episode (editor)."""
    return jsonify(episode_dict(episode_service.update_episode(current_user, episode_id, data)))


@blp.route("/episodes/<int:episode_id>", methods=["DELETE"])
@role_required("editor")
def delete_episode(episode_id: int):
    """Delete an episode with its jobs and files (editor)."""
    episode_service.delete_episode(current_user, episode_id)
    return "", 204


@blp.route("/episodes/<int:episode_id>/publish", methods=["POST"])
@role_required("editor")
def publish_episode(episode_id: int):
    """Publish an episode (editor)."""
    return jsonify(episode_dict(episode_service.publish_episode(current_user, episode_id)))
