"""A cache that lives for one delivery batch (rows every event of the batch would re-read)."""
from __future__ import annotations

from app.extensions import db

_KEY = "ec_batch_cache"


def batch_cache() -> dict:
    """The current batch's cache (per session; ``new_batch`` empties it)."""
    return db.session().info.setdefault(_KEY, {})


def new_batch() -> None:
    db.session().info.pop(_KEY, None)
