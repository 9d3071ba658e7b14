"""Run callbacks only after the current transaction commits (Zulip's ``on_commit``).

Enqueueing a task or emitting an event before the commit is durable lets a worker or a
client see a change that may still roll back; so side effects hang off ``after_commit``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger(__name__)
_KEY = "ec_on_commit"
_COLLECTORS = "ec_on_commit_collectors"
_ATOMIC = "ec_atomic"
_ROLLBACK_KEY = "ec_on_rollback"


class NestedAtomicError(RuntimeError):
    """``atomic()`` was entered inside another: the inner commit would end the outer unit."""


@contextmanager
def atomic(*, keep_state: bool = False) -> Iterator[Session]:
    """One unit of work: commit on a clean exit, roll back on any exception, never nest.

    The one way a service commits. Nesting is refused (not folded into the outer unit)
    because an inner function that believes it committed would be wrong either way: its
    side effects would wait for a commit it does not control. ``keep_state`` commits
    without expiring the objects (see ``commit_keeping_state``).
    """
    session = db.session()
    if session.info.get(_ATOMIC):
        raise NestedAtomicError("atomic() entered inside another atomic() unit")
    session.info[_ATOMIC] = True
    try:
        yield session
        if keep_state:
            commit_keeping_state(session)
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_ATOMIC, None)


def in_atomic() -> bool:
    """True inside an ``atomic()`` unit of the current session."""
    return bool(db.session().info.get(_ATOMIC))


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``session`` commits; forget it if the session rolls back."""
    session.info.setdefault(_KEY, []).append(callback)


def on_rollback(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` if ``session``'s transaction rolls back; forget it on commit.

    For work done outside the database that only the commit makes valid (bytes written
    for a file row a job's completing commit may still discard).
    """
    session.info.setdefault(_ROLLBACK_KEY, []).append(callback)


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
    session.info.pop(_ROLLBACK_KEY, None)
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
        for callback in session.info.pop(_ROLLBACK_KEY, []):
            try:
                callback()
            except Exception:  # noqa: BLE001 - cleanup never hides the rollback's cause
                log.exception("after-rollback callback failed")
