"""The registry of job types: name → handler, parameter schema and retry policy.

``POST /jobs`` validates against it, so an unknown type or bad params is a 422 at once,
never a job that fails later. The handlers live in ``app/jobs/handlers.py``; the runner
(``app/jobs/runner.py``) looks them up here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import Schema, fields, validate
from marshmallow import ValidationError as SchemaError

from app.errors import ValidationError
from app.jobs import handlers
from app.jobs.context import JobContext


class ExportParams(Schema):
    include_files = fields.Boolean(load_default=True)


class ChecksumParams(Schema):
    file_ids = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1)),
                           load_default=None, validate=validate.Length(max=10_000))


class NoopParams(Schema):
    """A diagnostic job: sleeps through ``steps`` checkpoints, may fail the first N tries."""

    duration_ms = fields.Integer(load_default=0, validate=validate.Range(0, 600_000))
    steps = fields.Integer(load_default=1, validate=validate.Range(1, 1000))
    fail_times = fields.Integer(load_default=0, validate=validate.Range(0, 100))


@dataclass(frozen=True)
class JobType:
    name: str
    params: type[Schema]
    handler: Callable[[JobContext], dict]
    max_retries: int = 3
    description: str = ""


JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        JobType("export", ExportParams, handlers.export, 3,
                "Zip of the episode's metadata and files, stored as a new file"),
        JobType("checksum", ChecksumParams, handlers.checksum, 3,
                "SHA-256 of each file, reporting mismatches and missing bytes"),
        JobType("noop", NoopParams, handlers.noop, 3, "Diagnostic job: waits, reports progress"),
    )
}


def get_type(name: str) -> JobType | None:
    return JOB_TYPES.get(name)


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
