"""Domain errors and the one JSON error shape for every 4xx/5xx."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from sqlalchemy.exc import DataError as SQLDataError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from app.extensions import db
from app.limits import retry_after

log = logging.getLogger(__name__)


class DomainError(Exception):
    """An error raised by a service function, mapped to an HTTP status by the API layer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class ValidationError(DomainError):
    status, code = 422, "validation_error"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class Conflict(DomainError):
    status, code = 409, "conflict"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class RateLimited(DomainError):
    status, code = 429, "rate_limited"


class DatabaseUnavailable(DomainError):
    status, code = 503, "database_unavailable"


# PostgreSQL SQLSTATE classes that mean "not now" rather than "this request is wrong":
# connection exceptions, insufficient resources, operator intervention (shutdown, restart).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached (or is shutting down, or the pool is exhausted).

    A connection refused or lost has no SQLSTATE; an error the server reports has one,
    and only the classes above mean the database itself is unavailable.
    """
    if isinstance(exc, DatabaseUnavailable | PoolTimeoutError | DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    orig = exc.orig
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return sqlite_name in _SQLITE_BUSY
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def database_unavailable_response():
    """503 ``database_unavailable`` with ``Retry-After`` (never a traceback)."""

    retry_after = current_app.config.get("DB_RETRY_AFTER_SECONDS", 5)
    return error_response(503, "database_unavailable",
                          "The database is unavailable; try again shortly",
                          {"retry_after": retry_after}, {"Retry-After": str(retry_after)})


def rollback_quietly() -> None:
    """Roll back after a failure; a dead connection cannot even do that, so close instead."""

    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; the pool replaces it
        db.session.close()


def error_response(status: int, code: str, message: str, details: Any = None, headers=None):
    """Build ``{"error": {"code", "message", "details"}}`` with the given status."""
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _flatten_messages(messages: Any) -> dict:
    """webargs nests errors by location ({"json": {"title": [...]}}); name the fields."""
    if not isinstance(messages, dict):
        return {"_schema": messages}
    details: dict = {}
    for location, errors in messages.items():
        if isinstance(errors, dict):
            details.update(errors)
        else:
            details[location if location not in ("json", "query", "form") else "_schema"] = errors
    return details


def _code_for(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


_UNSTORABLE = (OverflowError, UnicodeEncodeError, ValueError)


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON in the one shape: domain errors, HTTP errors, crashes."""

    @app.errorhandler(DomainError)
    def handle_domain_error(exc: DomainError):
        headers = {}
        if isinstance(exc, DatabaseUnavailable):
            rollback_quietly()
            return database_unavailable_response()
        if isinstance(exc, RateLimited) and "retry_after" in exc.details:
            headers["Retry-After"] = str(exc.details["retry_after"])
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.errorhandler(RateLimitExceeded)
    def handle_rate_limited(exc: RateLimitExceeded):
        seconds = retry_after(exc)
        return error_response(429, "rate_limited",
                              f"Too many requests; retry in {seconds} s",
                              {"limit": str(exc.limit.limit), "retry_after": seconds},
                              {"Retry-After": str(seconds)})

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        data = getattr(exc, "data", None) or {}
        headers = dict(data.get("headers") or {})
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        messages = data.get("messages")
        if exc.code == 422 or (messages and exc.code == 400):
            details = _flatten_messages(messages)
            if exc.code == 400:
                return error_response(400, "bad_request", "Malformed request body", details)
            return error_response(422, "validation_error", "Invalid input", details, headers)
        if exc.code == 413:

            return error_response(413, "payload_too_large", "The request body is too large",
                                  {"max_bytes": request.max_content_length})
        message = data.get("message") or exc.description or exc.name
        return error_response(exc.code or 500, _code_for(exc), message, {}, headers)

    @app.errorhandler(OverflowError)
    @app.errorhandler(UnicodeEncodeError)
    @app.errorhandler(StatementError)
    def handle_out_of_range(exc: Exception):
        # Values that pass the schema but not the database (a 10**30 integer, a date that
        # leaves the calendar in UTC, an unpaired surrogate): the client's input, not a crash.
        # Other database errors (the database is down, a bug) stay 500s.
        if isinstance(exc, StatementError) and not (
                isinstance(exc, SQLDataError) or isinstance(exc.orig, _UNSTORABLE)):
            return handle_unexpected(exc)

        db.session.rollback()
        return error_response(422, "value_out_of_range",
                              "A value is out of range or cannot be stored", {})

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(DisconnectionError)
    def handle_database_error(exc: Exception):
        if database_unavailable(exc):
            log.warning("database unavailable: %s", exc)
            rollback_quietly()
            return database_unavailable_response()
        return handle_out_of_range(exc)

    @app.errorhandler(RecursionError)
    def handle_too_deep(exc: RecursionError):

        db.session.rollback()
        return error_response(400, "bad_request", "The request body is nested too deeply", {})

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error")
        rollback_quietly()
        return error_response(500, "internal_error", "Internal server error")
