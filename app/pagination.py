"""Cursor pagination: ``{"items": [...], "next_cursor": ...}`` over an id-ordered query."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select

from app.errors import ValidationError
from app.extensions import db

DEFAULT_LIMIT = 20
MAX_ID = 2**31 - 1
MAX_LIMIT = 100


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded))["id"]
        if not isinstance(value, int) or not 0 <= value <= MAX_ID:
            raise ValueError("cursor id out of range")
        return value
    except Exception as exc:  # noqa: BLE001 - any malformed cursor is the client's error
        raise ValidationError("Invalid cursor", details={"cursor": ["Invalid cursor"]}) from exc


def parse_limit(raw: Any) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise ValidationError("Invalid limit", details={"limit": ["Not a valid integer."]}) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(
            "Invalid limit", details={"limit": [f"Must be between 1 and {MAX_LIMIT}."]}
        )
    return limit


def paginate(
    query: Select,
    id_column,
    serialize: Callable[[Any], dict],
    *,
    cursor: str | None,
    limit: Any,
    ascending: bool = False,
) -> dict:
    """Page through ``query`` by ``id_column`` (newest first unless ``ascending``)."""
    size = parse_limit(limit)
    if cursor:
        last = decode_cursor(cursor)
        query = query.where(id_column > last if ascending else id_column < last)
    query = query.order_by(id_column.asc() if ascending else id_column.desc()).limit(size + 1)
    rows = list(db.session.scalars(query))
    has_more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_cursor(rows[-1].id) if has_more and rows else None
    return {"items": [serialize(row) for row in rows], "next_cursor": next_cursor}
