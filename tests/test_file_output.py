"""A job's output file commits with the job's completion (``files.add_file`` commits
nothing): a rollback takes back the row, its event and the bytes."""
from __future__ import annotations

import io

from sqlalchemy import func, select

from app.extensions import db
from app.models import DomainEvent, File, User
from app.services import files


def _counts() -> tuple[int, int]:
    return (db.session.scalar(select(func.count()).select_from(File)),
            db.session.scalar(select(func.count()).select_from(DomainEvent)
                              .where(DomainEvent.name == "file_uploaded")))


def test_add_file_rolled_back_leaves_no_row_event_or_bytes(app, editor, episode):
    with app.app_context():
        before = _counts()
        actor = db.session.get(User, editor.id)
        added = files.add_file(actor, episode["id"], io.BytesIO(b"zip"), "out.zip",
                               "application/zip")
        path = files.path_of(added)
        assert path.exists()
        db.session.rollback()
        assert not path.exists()
        assert _counts() == before


def test_add_file_committed_keeps_row_event_and_bytes(app, editor, episode):
    with app.app_context():
        before = _counts()
        actor = db.session.get(User, editor.id)
        added = files.add_file(actor, episode["id"], io.BytesIO(b"zip"), "out.zip",
                               "application/zip")
        path = files.path_of(added)
        db.session.commit()
        db.session.rollback()  # a later rollback is not this file's: its bytes stay
        assert path.exists() and path.read_bytes() == b"zip"
        assert _counts() == (before[0] + 1, before[1] + 1)
