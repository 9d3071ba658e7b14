"""Run callbacks only after the current transaction commits (Zulip's ``on_commit``).

Enqueueing a task or emitting an event before the commit is durable lets a worker or a
client see a change that may still roll back; so side effects hang off ``after_commit``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_KEY = "ec_on_commit"


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``session`` commits; forget it if the session rolls back."""
    session.info.setdefault(_KEY, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_callbacks(session: Session) -> None:
    callbacks = session.info.pop(_KEY, [])
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a side effect never fails the change itself
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_callbacks(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_KEY, None)
