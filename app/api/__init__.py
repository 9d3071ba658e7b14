"""REST API blueprints under /api/v1."""
from __future__ import annotations

from flask import Flask, request

from app.extensions import api
from app.services.events import RequestMeta, request_meta

PREFIX = "/api/v1"


def register_blueprints(app: Flask) -> None:
    """Register every blueprint with flask-smorest (which also builds the OpenAPI spec)."""
    from app.api import (
        activity,
        auth,
        episodes,
        files,
        health,
        jobs,
        notifications,
        presence,
        realtime,
        users,
    )

    for module in (health, auth, users, episodes, jobs, files, activity, presence, realtime,
                   notifications):
        api.register_blueprint(module.blp, url_prefix=PREFIX)

    @app.before_request
    def _remember_request_meta() -> None:
        # Services never read ``request``; they read this context variable instead.
        forwarded = request.headers.get("X-Forwarded-For", "")
        ip = forwarded.split(",")[0].strip() if forwarded else request.remote_addr
        request_meta.set(RequestMeta(ip_address=ip, user_agent=request.user_agent.string))
