"""Request limits: the request-body cap, and the rate limits of the auth endpoints.

Rate limits are flask-limiter's (``app.extensions.limiter``, applied by decorators in
``app/api/auth.py``). Counters live in Redis when ``REDIS_URL`` is set, so every web process
shares them; while Redis is unreachable each process counts in its own memory
(flask-limiter's in-memory fallback) and goes back to Redis when it answers again.
"""
from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, request
from flask_jwt_extended import get_jwt_identity
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import RequestEntityTooLarge

from app.models.core import normalize_email

# Routes whose body may be larger than MAX_JSON_BYTES: MAX_CONTENT_LENGTH
# (MAX_UPLOAD_BYTES) bounds them instead.
LARGE_BODY_ENDPOINTS = frozenset({"files.upload_file"})


class AppLimiter(Limiter):
    """flask-limiter's Limiter, reset for each app it is bound to.

    The extension is one object bound by every ``create_app`` (tests make many apps); its
    "storage is dead, use memory" flag must not leak from one app into the next.
    """

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        self._storage_dead = False


# Rate limits: each limit names its own key (below); nothing is limited by default.
limiter = AppLimiter(key_func=get_remote_address)


def init_limits(app: Flask) -> None:
    """Cap request bodies, then bind the rate limiter (Redis storage, memory fallback).

    Call before anything else registers a ``before_request`` hook: the cap must come
    before any hook that reads the body.
    """
    app.before_request(cap_request_body)
    redis_url = app.config.get("REDIS_URL")
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_url or "memory://")
    if app.config["RATELIMIT_STORAGE_URI"].startswith(("redis://", "rediss://")):
        # Fail fast (then fall back to memory), keyed under ec: like every key of ours.
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {
            "key_prefix": "ec:limits", "socket_connect_timeout": 2, "socket_timeout": 2})
    limiter.init_app(app)


def cap_request_body() -> None:
    """413 for a body over MAX_JSON_BYTES before anything reads it.

    A declared ``Content-Length`` over the cap is refused at once. A body without one
    (chunked; werkzeug reads those only when the server terminates the stream) is read here,
    at most one byte past the cap: werkzeug's own cap would silently cut it at the cap and
    hand the parser a truncated body.
    """
    if request.endpoint in LARGE_BODY_ENDPOINTS:
        return
    cap = current_app.config["MAX_JSON_BYTES"]
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        request.max_content_length = cap + 1
        body = request.get_data(cache=True)  # cached: the view parses these bytes
        request.max_content_length = cap
        if len(body) > cap:
            raise RequestEntityTooLarge()
    request.max_content_length = cap
    if request.content_length is not None and request.content_length > cap:
        raise RequestEntityTooLarge()


def retry_after(exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached limit lets a request through again (at least 1)."""
    current = limiter.current_limit
    try:
        reset_at = current.window.reset_time if current is not None else None
    except Exception:  # noqa: BLE001 - storage gone meanwhile: the window's length is safe
        reset_at = None
    if reset_at is None:
        return max(1, int(exc.limit.limit.get_expiry()))
    return max(1, math.ceil(reset_at - time.time()))


# ---- limit values and keys (read per request, so tests and deployments set them) ----


def login_per_ip() -> str:
    return current_app.config["RATELIMIT_LOGIN_PER_IP"]


def login_per_account() -> str:
    return current_app.config["RATELIMIT_LOGIN_PER_ACCOUNT"]


def register_per_ip() -> str:
    return current_app.config["RATELIMIT_REGISTER_PER_IP"]


def refresh_per_user() -> str:
    return current_app.config["RATELIMIT_REFRESH_PER_USER"]


def ip_key() -> str:
    """The client address (``request.remote_addr``, which ProxyFix sets behind proxies)."""
    return f"ip:{get_remote_address()}"


def account_key() -> str:
    """The account a login names, normalised as accounts are stored."""
    data = request.get_json(silent=True)
    email = data.get("email") if isinstance(data, dict) else None
    return f"account:{normalize_email(email) if isinstance(email, str) else ''}"


def user_key() -> str:
    """The user of the verified token (the limit is applied inside ``jwt_required``)."""
    return f"user:{get_jwt_identity()}"


def failed_login(response: Response) -> bool:
    """Only failed logins count against an account: logging in never uses up its allowance."""
    return response.status_code == 401
