"""Files: bytes in the storage directory, rows in the database, signed download URLs."""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from app.errors import NotFound, ValidationError
from app.extensions import db
from app.models import Episode, File, User, utcnow
from app.services import events
from app.services.transaction import atomic, on_commit, on_rollback

CHUNK = 1024 * 1024
MAX_NAME = 255

# Names Windows maps to devices whatever the extension ("CON.txt", "nul", "COM1.tar.gz").
_WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)",
                             re.IGNORECASE)
# Characters Windows refuses in a name (":" also opens an alternate data stream).
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
# Bidirectional overrides spoof extensions ("evil\u202egpj.exe" shows as "evilexe.jpg").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def clean_filename(raw: str | None, *, fallback: str | None = None) -> str:
    """A file name that is safe to show, to send as a download name and to extract anywhere.

    The client's name is only a label: the last component of either path separator (a
    Windows ``x\\..\\evil.bat`` is ``evil.bat``), without control characters or bidi
    overrides, Windows' forbidden characters as ``_``, no leading or trailing dots and
    spaces, a device name (``CON``, ``NUL``, ``COM1``...) prefixed with ``_``, at most 255
    characters keeping the extension. Nothing left: ``fallback``, or a 422 without one.
    """
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch not in _BIDI_CONTROLS
                   and unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp"))
    name = _WINDOWS_FORBIDDEN.sub("_", name).strip(" .")
    if _WINDOWS_DEVICE.fullmatch(name.split(".", 1)[0].rstrip(" ")):
        name = "_" + name
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        keep = dot + ext if stem and len(ext) <= 16 else ""
        name = name[:MAX_NAME - len(keep)].rstrip(" .") + keep
    if not name:
        if fallback is not None:
            return fallback
        raise ValidationError("A usable file name is required",
                              details={"file": ["The file name has no usable characters."]})
    return name


def storage_dir() -> Path:
    path = Path(current_app.config["STORAGE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def path_of(file: File) -> Path:
    return storage_dir() / file.stored_name


def get_file(file_id: int) -> File:
    file = db.session.get(File, file_id)
    if file is None:
        raise NotFound("File not found")
    return file


def _file_payload(file: File, actor_key: str, actor: User | None) -> dict:
    return {
        "file_id": file.id,
        "episode_id": file.episode_id,
        "file_name": file.filename,
        "size": file.size,
        actor_key: actor.id if actor is not None else None,
    }


def store_file(
    actor: User | None,
    episode_id: int,
    stream: BinaryIO,
    filename: str,
    content_type: str | None,
    *,
    event_name: str = "file_uploaded",
    extra_payload: dict | None = None,
) -> File:
    """Stream bytes to disk (temp name, then rename), then commit the row and its event."""
    with atomic():
        return add_file(actor, episode_id, stream, filename, content_type,
                        event_name=event_name, extra_payload=extra_payload)


def add_file(
    actor: User | None,
    episode_id: int,
    stream: BinaryIO,
    filename: str,
    content_type: str | None,
    *,
    event_name: str = "file_uploaded",
    extra_payload: dict | None = None,
) -> File:
    """``store_file`` in the caller's transaction: the row and its event are flushed, not
    committed (a job's output commits with the job's completion); a rollback removes the
    bytes."""
    episode = db.session.get(Episode, episode_id)
    if episode is None:
        raise NotFound("Episode not found")
    if not (filename or "").strip():
        raise ValidationError("A file name is required", details={"file": ["Missing file name."]})
    name = clean_filename(filename)
    stored_name = uuid.uuid4().hex
    target = storage_dir() / stored_name
    tmp = target.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        os.replace(tmp, target)
        on_rollback(db.session(), lambda: target.unlink(missing_ok=True))
        file = File(
            episode_id=episode.id,
            filename=name,
            stored_name=stored_name,
            content_type=content_type or "application/octet-stream",
            size=size,
            sha256=digest.hexdigest(),
            uploaded_by=actor.id if actor is not None else None,
        )
        db.session.add(file)
        db.session.flush()
        payload = _file_payload(file, "uploaded_by", actor)
        payload.update(extra_payload or {})
        events.record_change(event_name, action="uploaded", actor=actor, resource=file,
                             payload=payload)
    except BaseException:
        tmp.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise
    return file


def remove_bytes_after_commit(stored_names: list[str]) -> None:
    """Unlink stored bytes once the rows' deletion is durable (a rollback keeps them)."""
    directory = storage_dir()

    def unlink() -> None:
        for stored in stored_names:
            (directory / stored).unlink(missing_ok=True)

    on_commit(db.session(), unlink)


def delete_file(actor: User, file_id: int) -> None:
    with atomic():
        file = get_file(file_id)
        events.record_change("file_deleted", action="deleted", actor=actor, resource=file,
                             payload=_file_payload(file, "deleted_by", actor))
        db.session.delete(file)
        remove_bytes_after_commit([file.stored_name])


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="file-download")


def make_download_token(file: File, actor: User, ttl: int | None = None) -> tuple[str, datetime]:
    """A signed token naming the file, who asked, and when it stops working."""
    seconds = ttl if ttl is not None else current_app.config["DOWNLOAD_URL_SECONDS"]
    expires_at = utcnow() + timedelta(seconds=seconds)
    # "s" (the random stored name) binds the token to these bytes: if the file is deleted
    # and its id reused, the old link opens nothing.
    token = _serializer().dumps({"f": file.id, "s": file.stored_name, "u": actor.id,
                                 "e": expires_at.timestamp()})
    return token, expires_at


def resolve_download_token(file_id: int, token: str) -> tuple[File, int | None]:
    """The file a valid, unexpired token names; 404 for anything else (nothing leaks)."""
    try:
        claims = _serializer().loads(token)
    except BadSignature:
        raise NotFound("File not found") from None
    if claims.get("f") != file_id or claims.get("e", 0) < utcnow().timestamp():
        raise NotFound("File not found")
    file = get_file(file_id)
    if claims.get("s") != file.stored_name or not path_of(file).exists():
        raise NotFound("File not found")
    return file, claims.get("u")


def record_download(file: File, user_id: int | None) -> None:
    with atomic():
        actor = db.session.get(User, user_id) if user_id else None
        events.record_change("file_download", action="downloaded", actor=actor, resource=file,
                             payload=_file_payload(file, "downloaded_by", actor))
