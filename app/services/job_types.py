"""The registry of job types: name → parameter schema and retry policy.

``POST /jobs`` validates against it, so an unknown type or bad params is a 422 at once,
never a job that fails later. The handlers that run each type live in ``workers/jobs.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import Schema, fields, validate
from marshmallow import ValidationError as SchemaError

from app.errors import ValidationError


class ExportParams(Schema):
    include_files = fields.Boolean(load_default=True)


class ChecksumParams(Schema):
    file_ids = fields.List(fields.Integer(), load_default=None)


class NoopParams(Schema):
    """A diagnostic job: sleeps through ``steps`` checkpoints, may fail the first N tries."""

    duration_ms = fields.Integer(load_default=0, validate=validate.Range(0, 600_000))
    steps = fields.Integer(load_default=1, validate=validate.Range(1, 1000))
    fail_times = fields.Integer(load_default=0, validate=validate.Range(0, 100))


@dataclass(frozen=True)
class JobType:
    name: str
    params: type[Schema]
    max_retries: int = 3
    description: str = ""


JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        JobType("export", ExportParams, 3, "Zip of the episode's metadata and files"),
        JobType("checksum", ChecksumParams, 3, "SHA-256 of each file, reporting mismatches"),
        JobType("noop", NoopParams, 3, "Diagnostic job: waits, reports progress"),
    )
}


def validate_params(job_type: str, params: dict | None) -> tuple[JobType, dict]:
    """The job type and its loaded params; 422 naming the field otherwise."""
    spec = JOB_TYPES.get(job_type)
    if spec is None:
        raise ValidationError(
            "Unknown job type",
            details={"type": [f"Must be one of: {', '.join(sorted(JOB_TYPES))}."]},
        )
    try:
        loaded = spec.params().load(params or {})
    except SchemaError as exc:
        raise ValidationError("Invalid job params", details={"params": exc.messages}) from exc
    return spec, loaded
