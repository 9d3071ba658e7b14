"""Request schemas (marshmallow via flask-smorest): validation names the bad fields."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowValidationError

from app.extensions import ErrorEnvelopeSchema
from app.models.core import EPISODE_STATUSES, ROLES
from app.models.presence import STATUSES


class StrictSchema(Schema):
    class Meta:
        unknown = EXCLUDE


class RegisterSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=255))
    password = fields.String(required=True, validate=validate.Length(min=8, max=128))
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))


class SetupSchema(Schema):
    first_user_becomes_admin = fields.Boolean(required=True)


class LoginSchema(StrictSchema):
    email = fields.String(required=True)
    password = fields.String(required=True)


class LogoutSchema(StrictSchema):
    refresh_token = fields.String(load_default=None)


class RoleSchema(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class JSONBoolean(fields.Boolean):
    """A JSON ``true``/``false`` only: not 0, 1, "no" (marshmallow's Boolean takes those)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class UserUpdateSchema(StrictSchema):
    """``PATCH /users/<id>``: a new role, a new active flag, or both."""

    role = fields.String(validate=validate.OneOf(ROLES))
    is_active = JSONBoolean(metadata={
        "description": "false deactivates the account: its sockets are disconnected, its "
                       "refresh tokens revoked and its access tokens refused"})

    @validates_schema
    def _something(self, data, **_kwargs):
        if not data:
            raise MarshmallowValidationError("Give role and/or is_active.", field_name="_schema")


class StatusSchema(StrictSchema):
    """A presence status: ``PUT /presence/me`` and the socket event ``set_status`` alike."""

    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    message = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))


class EpisodeCreateSchema(StrictSchema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=255))
    episode_number = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    season = fields.Integer(load_default=None, allow_none=True, strict=True,
                            validate=validate.Range(min=0))
    description = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(max=20_000))
    categories = fields.List(fields.String(validate=validate.Length(min=1, max=64)),
                             load_default=list, validate=validate.Length(max=50))
    status = fields.String(load_default="draft",
                           validate=validate.OneOf(("draft", "in_review")))


class EpisodeUpdateSchema(StrictSchema):
    title = fields.String(validate=validate.Length(min=1, max=255))
    episode_number = fields.Integer(strict=True, validate=validate.Range(min=0))
    season = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0))
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    categories = fields.List(fields.String(validate=validate.Length(min=1, max=64)),
                             validate=validate.Length(max=50))
    status = fields.String(validate=validate.OneOf([s for s in EPISODE_STATUSES
                                                    if s != "published"]))


class JobCreateSchema(StrictSchema):
    type = fields.String(required=True)
    episode_id = fields.Integer(required=True, strict=True)
    params = fields.Dict(load_default=dict)


class ListQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String(load_default=None)


class EpisodeListQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf(EPISODE_STATUSES))
    season = fields.Integer()


class JobListQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf(
        ("queued", "running", "completed", "failed", "cancelled")))
    episode_id = fields.Integer()
    type = fields.String()


def _rate_limited_doc() -> dict:
    return {
        "schema": ErrorEnvelopeSchema,
        "description": "Rate limited (`rate_limited`; `too_many_queued_jobs` for jobs): "
                       "retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"description": "Seconds to wait",
                                    "schema": {"type": "integer"}}},
    }


# OpenAPI: ``@blp.alt_response(429, **RATE_LIMITED)`` on every rate-limited route.
RATE_LIMITED = _rate_limited_doc()
