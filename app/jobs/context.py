"""What a job handler sees: its job's plain values and one ``progress`` checkpoint.

Handlers depend on nothing but this module, so they stay small and testable, and the
registry (``app.jobs.types``) can import them without an import cycle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class JobCancelled(Exception):
    """Raised at a checkpoint once a cancel was requested: the handler unwinds and cleans up."""


class JobLost(Exception):
    """This attempt no longer owns the job (recovered as stale, deleted with its episode)."""


class PermanentJobError(Exception):
    """Fail at once without retries: trying again cannot help (e.g. the episode is gone)."""


@dataclass
class JobContext:
    """One attempt of one job, as a handler sees it (plain values, never ORM rows)."""

    job_id: int
    episode_id: int
    type: str
    params: dict[str, Any]
    attempt: int  # 0 on the first try, n on the n-th automatic retry
    created_by: int | None
    _checkpoint: Callable[[int, str], None] = field(repr=False, default=lambda _p, _m: None)

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress 0–100; also the cooperative cancel point (raises JobCancelled).

        Cheap enough to call often: the runner throttles what it stores and emits.
        """
        self._checkpoint(max(0, min(100, int(percent))), message)
