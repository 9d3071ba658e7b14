"""Structured logs: plain text by default, one JSON object per line with ``LOG_FORMAT=json``.

Every record carries ``request_id``, ``user_id``, ``event_id`` and ``task_id`` from one
context variable, so an operator can follow one request from the web process through
the outbox into the worker's lines. The web layer sets it per request (``X-Request-ID``,
accepted when well formed, else generated, and returned); Celery carries it in task
headers (``before_task_publish``) and restores it around each task (``task_prerun``);
delivery sets ``event_id`` and the event row's stored ``request_id`` per event.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery import signals
from flask import Flask, g, request

FIELDS = ("request_id", "user_id", "event_id", "task_id")
HEADER = "X-Request-ID"
# A client's id is kept only when short and plain: it ends up in logs and the database.
REQUEST_ID_MAX = 64
_REQUEST_ID = re.compile(rf"^[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX}}}$")
_TASK_HEADER_PREFIX = "ec_"

log_context: ContextVar[dict[str, Any]] = ContextVar("ec_log_context", default={})  # noqa: B039 - replaced, never mutated


def current(name: str) -> Any:
    """One field of the current log context (None when unset)."""
    return log_context.get().get(name)


def bind(**fields: Any) -> None:
    """Add fields to the current context (a new dict: other contexts never see it)."""
    log_context.set({**log_context.get(), **{k: v for k, v in fields.items() if v is not None}})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Fields set for the duration of a block, then the previous context again."""
    token = log_context.set({**log_context.get(), **fields})
    try:
        yield
    finally:
        log_context.reset(token)


def valid_request_id(value: str | None) -> str:
    """The client's request id when well formed, else a fresh one."""
    if value and _REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Copies the log context onto every record (the formatters read the attributes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context.get()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The plain default, with the context fields that are set appended (and the process
    name, as Celery's own format had it: which pool process did what)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                         if getattr(record, name, None) is not None)
        return f"{line} [{extra}]" if extra else line


_HANDLER_MARK = "_ec_handler"


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Install (or replace) the one root handler; idempotent, tests build many apps."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())


def init_request_ids(app: Flask) -> None:
    """``X-Request-ID`` in (validated) and out; the id and later the user go in the context."""

    @app.before_request
    def _request_id() -> None:
        g.request_id = valid_request_id(request.headers.get(HEADER))
        log_context.set({"request_id": g.request_id})

    @app.after_request
    def _echo_request_id(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[HEADER] = request_id
        return response

    @app.teardown_request
    def _forget_request_context(_exc: BaseException | None) -> None:
        # A reused thread (or the test client) must not lend this request's ids to the next.
        log_context.set({})


def install_celery_signals() -> None:
    """Carry the context in task headers and restore it around each task (once per process)."""
    signals.before_task_publish.connect(_publish_context, weak=False, dispatch_uid="ec_log_publish")
    signals.task_prerun.connect(_restore_context, weak=False, dispatch_uid="ec_log_prerun")
    signals.task_postrun.connect(_clear_context, weak=False, dispatch_uid="ec_log_postrun")
    # Celery's own logging setup would replace the root handler: keep ours.
    signals.setup_logging.connect(_keep_our_logging, weak=False, dispatch_uid="ec_log_setup")


def _publish_context(headers: dict | None = None, **_kwargs: Any) -> None:
    if headers is None:
        return
    for name in ("request_id", "user_id", "event_id"):
        value = current(name)
        if value is not None:
            headers[_TASK_HEADER_PREFIX + name] = value


def _restore_context(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    request_context = getattr(task, "request", None)
    if request_context is None:
        return
    if getattr(request_context, "is_eager", False):
        fields = dict(log_context.get())  # an eager task runs in its caller's context
    else:
        fields = {}
        for name in ("request_id", "user_id", "event_id"):
            value = getattr(request_context, _TASK_HEADER_PREFIX + name, None)
            if value is not None:
                fields[name] = value
    fields["task_id"] = task_id
    request_context.ec_log_token = log_context.set(fields)


def _clear_context(task: Any = None, **_kwargs: Any) -> None:
    token = getattr(getattr(task, "request", None), "ec_log_token", None)
    if token is not None:
        try:
            log_context.reset(token)
        except ValueError:  # set in another context (a thread pool's hand-off): just clear
            log_context.set({})


def _keep_our_logging(**_kwargs: Any) -> None:
    """Handled: ``create_app`` already configured logging from the settings."""
