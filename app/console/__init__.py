"""The web console: the product's reference client, served at ``/`` by every deployment.

It is a static single-page app (plain ES modules, vendored assets, no build step) that
talks only to the public REST API and Socket.IO, exactly as an outside frontend would.
Nothing here reads the database: anything the console needs goes into the API first.
Pages carry no inline scripts or styles, so a strict Content-Security-Policy can be added.
"""
from __future__ import annotations

from flask import Blueprint, Flask, render_template

bp = Blueprint("console", __name__, static_folder="static", static_url_path="/console/static",
               template_folder="templates")


@bp.get("/")
def index():
    """The console's shell; the hash part of the URL picks the page (#/episodes/3)."""
    return render_template("console/index.html")


@bp.get("/api/docs")
@bp.get("/api/docs/")
def api_docs():
    """Interactive API docs (Swagger UI, vendored) for ``/api/v1/openapi.json``."""
    return render_template("console/docs.html")


def init_console(app: Flask) -> None:
    """Register the console blueprint (its routes do not clash with ``/api/v1``)."""
    app.register_blueprint(bp)
