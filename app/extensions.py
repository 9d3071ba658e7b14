"""Every singleton of the application, made once and unbound; ``create_app`` binds them."""
from __future__ import annotations

from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from marshmallow import Schema, fields
from sqlalchemy import MetaData

# Deterministic constraint names so migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorEnvelopeSchema(Schema):
    """The one error shape every 4xx/5xx has: ``{"error": {code, message, details}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)


class EpisodeControlApi(Api):
    """flask-smorest, documenting our error envelope instead of its own."""

    ERROR_SCHEMA = ErrorEnvelopeSchema


db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
jwt = JWTManager()
socketio = SocketIO()
api = EpisodeControlApi()
