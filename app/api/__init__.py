"""REST API blueprints under /api/v1."""
from __future__ import annotations

import re

from flask import Flask, request

from app.errors import ValidationError
from app.extensions import api
from app.services.events import RequestMeta, request_meta

PREFIX = "/api/v1"
_PAIRS = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def register_blueprints(app: Flask) -> None:
    """Register every blueprint with flask-smorest (which also builds the OpenAPI spec)."""
    # Here, not at the top: every ``app.api.x`` import runs this package first, and the
    # blueprint modules import ``app.api.schemas`` and the services themselves.
    from app.api import (
        activity,
        auth,
        episodes,
        events,
        files,
        health,
        jobs,
        notifications,
        presence,
        realtime,
        users,
    )

    for module in (health, auth, users, episodes, jobs, files, activity, presence, realtime,
                   notifications, events):
        api.register_blueprint(module.blp, url_prefix=PREFIX)
    presence.describe_realtime(api.spec)

    @app.before_request
    def _refuse_unpaired_surrogates():
        # JSON may spell a lone UTF-16 surrogate ("\ud800"): Python accepts it, but no
        # database or JSON column can store it, so it is refused at the door, not in a worker.
        if request.is_json and _LONE_SURROGATE.search(_PAIRS.sub("", request.get_data(
                cache=True, as_text=True))):
            raise ValidationError("The body contains an unpaired UTF-16 surrogate escape",
                                  details={"_schema": ["Unpaired surrogate escape."]})

    @app.before_request
    def _remember_request_meta() -> None:
        # Services never read ``request``; they read this context variable instead.
        # remote_addr honours X-Forwarded-For only behind TRUSTED_PROXIES (app/security.py).
        request_meta.set(RequestMeta(ip_address=request.remote_addr,
                                     user_agent=request.user_agent.string))
