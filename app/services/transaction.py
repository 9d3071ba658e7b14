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
_COLLECTORS = "ec_on_commit_collectors"


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``session`` commits; forget it if the session rolls back."""
    session.info.setdefault(_KEY, []).append(callback)


class _Collector:
    def __init__(self, flush: Callable[[list], None]) -> None:
        self.items: list = []
        self.flush = flush

    def __call__(self) -> None:
        self.flush(self.items)


def collect_on_commit(session: Session, key: str, flush: Callable[[list], None]) -> list:
    """A list handed to ``flush`` once, when the current transaction commits.

    Every call with the same ``key`` in one transaction gets the same list, so work done
    per commit (waking the event drainer) happens once per commit, not once per item.
    """
    collectors = session.info.setdefault(_COLLECTORS, {})
    if key not in collectors:
        collectors[key] = _Collector(flush)
        on_commit(session, collectors[key])
    return collectors[key].items


def commit_keeping_state(session: Session) -> None:
    """Commit without expiring the session's objects.

    For a request that commits once and then serializes what it just wrote: every column
    it returns was set by this transaction (Python-side defaults included), so reloading
    them would only cost a SELECT and a second transaction.
    """
    previous = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = previous


@event.listens_for(Session, "after_commit")
def _run_callbacks(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT released: the callbacks wait for the real commit
    callbacks = session.info.pop(_KEY, [])
    session.info.pop(_COLLECTORS, None)
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a side effect never fails the change itself
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_callbacks(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_KEY, None)
        session.info.pop(_COLLECTORS, None)
