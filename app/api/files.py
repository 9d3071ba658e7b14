"""Files: upload, list, metadata, delete, signed download URLs."""
from __future__ import annotations

from flask import jsonify, request, send_file, url_for
from flask_jwt_extended import current_user, jwt_required
from flask_smorest import Blueprint

from app.api.schemas import ListQuerySchema
from app.auth import role_required
from app.errors import NotFound, ValidationError
from app.extensions import db
from app.models import File, isoformat
from app.pagination import paginate
from app.serializers import file_dict
from app.services import episodes as episode_service
from app.services import files as file_service

blp = Blueprint("files", __name__, description="Media files")


UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}}}}}}


@blp.route("/episodes/<int:episode_id>/files", methods=["POST"])
@blp.doc(requestBody=UPLOAD_BODY)
@role_required("editor")
def upload_file(episode_id: int):
    """Upload a file (multipart field ``file``) to an episode (editor); 413 past the limit."""
    upload = request.files.get("file")
    if upload is None:
        raise ValidationError("A file is required", details={"file": ["Missing multipart field."]})
    file = file_service.store_file(current_user, episode_id, upload.stream, upload.filename,
                                   upload.mimetype)
    return jsonify(file_dict(file)), 201


@blp.route("/episodes/<int:episode_id>/files")
@jwt_required()
@blp.arguments(ListQuerySchema, location="query")
def list_files(args, episode_id: int):
    """An episode's files, newest first."""
    episode_service.get_episode(episode_id)
    query = db.select(File).where(File.episode_id == episode_id)
    return jsonify(paginate(query, File.id, file_dict, cursor=args["cursor"], limit=args["limit"]))


@blp.route("/files/<int:file_id>")
@jwt_required()
def get_file(file_id: int):
    """A file's metadata."""
    return jsonify(file_dict(file_service.get_file(file_id)))


@blp.route("/files/<int:file_id>", methods=["DELETE"])
@role_required("editor")
def delete_file(file_id: int):
    """Delete the row and the bytes (editor)."""
    file_service.delete_file(current_user, file_id)
    return "", 204


@blp.route("/files/<int:file_id>/download-url")
@jwt_required()
def download_url(file_id: int):
    """A URL that downloads the file without a token until it expires."""
    file = file_service.get_file(file_id)
    token, expires_at = file_service.make_download_token(file, current_user)
    url = url_for("files.download", file_id=file.id, token=token, _external=True)
    response = jsonify({"url": url, "expires_at": isoformat(expires_at)})
    response.headers["Cache-Control"] = "no-store"  # the URL is a bearer credential
    return response


@blp.route("/files/<int:file_id>/download")
@blp.doc(security=[])
def download(file_id: int):
    """The bytes, for a valid signed token (public); 404 once it has expired."""
    token = request.args.get("token")
    if not token:
        raise NotFound("File not found")
    file, user_id = file_service.resolve_download_token(file_id, token)
    path = file_service.path_of(file)
    file_service.record_download(file, user_id)
    # Cleaned again: rows stored before names were cleaned may hold backslashes.
    return send_file(path, mimetype=file.content_type, as_attachment=True,
                     download_name=file_service.clean_filename(file.filename, fallback="download"),
                     conditional=True)
