"""Jobs: create, list, get, retry, cancel."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint

from app.api.schemas import RATE_LIMITED, JobCreateSchema, JobListQuerySchema
from app.auth import role_required
from app.extensions import db
from app.jobs import service as job_service
from app.models import Job
from app.pagination import paginate
from app.serializers import job_dict

blp = Blueprint("jobs", __name__, description="Processing jobs")


@blp.route("/jobs")
@jwt_required()
@blp.arguments(JobListQuerySchema, location="query")
def list_jobs(args):
    """Jobs, newest first; filter by status, episode or type."""
    query = db.select(Job)
    for field in ("status", "episode_id", "type"):
        if args.get(field) is not None:
            query = query.where(getattr(Job, field) == args[field])
    return jsonify(paginate(query, Job.id, job_dict, cursor=args["cursor"], limit=args["limit"]))


@blp.route("/jobs", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@role_required("editor")
@blp.arguments(JobCreateSchema)
def create_job(data):
    """Queue a job (editor); unknown type or bad params → 422; 429 past the per-user cap."""
    return jsonify(job_dict(job_service.create_job(current_user, data))), 201


@blp.route("/jobs/<int:job_id>")
@jwt_required()
def get_job(job_id: int):
    """One job."""
    return jsonify(job_dict(job_service.get_job(job_id)))


@blp.route("/jobs/<int:job_id>/retry", methods=["POST"])
@blp.alt_response(429, **RATE_LIMITED)
@role_required("editor")
def retry_job(job_id: int):
    """Put a failed or cancelled job back in the queue (editor)."""
    return jsonify(job_dict(job_service.retry_job(current_user, job_id)))


@blp.route("/jobs/<int:job_id>/cancel", methods=["POST"])
@role_required("editor")
def cancel_job(job_id: int):
    """Cancel a queued or running job (editor)."""
    return jsonify(job_dict(job_service.cancel_job(current_user, job_id)))
