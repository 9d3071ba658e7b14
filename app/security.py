"""Safe defaults at the edge: CORS for REST and sockets, trusted proxies, security headers.

One setting, ``CORS_ORIGINS``, governs both the REST API (Flask-CORS) and Socket.IO
(python-engineio), so a browser frontend that may open sockets may also call the API and
no other origin can do either:

- ``*``: any origin (the development default; production refuses it);
- a comma-separated list: exactly those origins;
- empty (the production default): same origin only. The REST API sends no CORS headers,
  and Socket.IO gets ``None``, python-engineio's own same-origin check. Never ``[]``,
  which turns that check off and accepts a websocket from any ``Origin``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Flask
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

# Headers a browser frontend on another origin must be able to read.
EXPOSED_HEADERS = ["Retry-After", "Content-Disposition"]


def cors_origins(app: Flask) -> list[str] | str | None:
    """``CORS_ORIGINS`` parsed: ``"*"``, a list of origins, or None for same origin only."""
    raw = app.config.get("CORS_ORIGINS") or ""
    origins = [origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip()]
    if "*" in origins:  # python-engineio reads a "*" anywhere in the list as "any origin"
        return "*"
    return origins or None


def init_cors(app: Flask) -> None:
    """Flask-CORS on the REST API for the configured origins (nothing for same origin)."""
    origins = cors_origins(app)
    if origins is None:
        return
    # Bearer tokens, not cookies: no credentials, so "*" stays a plain wildcard.
    CORS(app, resources={r"/api/*": {"origins": origins}}, expose_headers=EXPOSED_HEADERS,
         max_age=600)


class SecurityHeaders:
    """WSGI middleware: ``X-Content-Type-Options: nosniff`` on every response.

    Middleware rather than ``after_request`` so that Engine.IO's own responses (long
    polling, handshake refusals), which never pass through Flask, carry it too.
    """

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info=None):
            if not any(name.lower() == "x-content-type-options" for name, _ in headers):
                headers = [*headers, ("X-Content-Type-Options", "nosniff")]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def init_edge(app: Flask) -> None:
    """Wrap the whole WSGI stack (Socket.IO included): headers, then trusted proxies.

    Called after Socket.IO is bound, so Engine.IO also sees the proxy-corrected environ
    (scheme and host for its same-origin check). With ``TRUSTED_PROXIES=0`` (the default)
    ``X-Forwarded-*`` is ignored and ``request.remote_addr`` is the TCP peer; with N, the
    Nth address from the right of ``X-Forwarded-For``, the one the outermost trusted proxy saw.
    """
    init_cors(app)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,
                                x_host=proxies, x_port=proxies)
