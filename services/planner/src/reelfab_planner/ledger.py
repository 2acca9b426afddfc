"""The job ledger's rules: where a job is on its path (requested → swapped → rendered → published, or
failed at a stage with a reason), decided from the stage events as they arrive.

Events of one job share its Kafka key, so each topic delivers them in order; across topics they may
arrive in any order (render.completed before swap.completed when the planner was down). A job never
moves backwards: a late swap.completed leaves a rendered job rendered. A failure is final for the path
(the stage gave up) and so is publication; what arrives after either is kept in the job's steps, so an
operator sees it, without changing the status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

REQUESTED, SWAPPED, RENDERED, PUBLISHED, FAILED = "requested", "swapped", "rendered", "published", "failed"
STATUSES = (REQUESTED, SWAPPED, RENDERED, PUBLISHED, FAILED)
ORDER = {REQUESTED: 0, SWAPPED: 1, RENDERED: 2, PUBLISHED: 3}
UNFINISHED = (REQUESTED, SWAPPED, RENDERED)


@dataclass(frozen=True)
class Step:
    """One event on a job's path, as the ledger keeps it."""

    status: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)  # hashes, URIs, the reason of a failure


@dataclass(frozen=True)
class Advance:
    status: str  # the job's status after the step
    changed: bool  # whether the status moved


def advance(current: str | None, step: Step) -> Advance:
    """The job's status once ``step`` is recorded (``current`` None: a job the ledger has not seen,
    e.g. one submitted by hand)."""
    if current is None:
        return Advance(step.status, True)
    if current in (FAILED, PUBLISHED):
        return Advance(current, False)  # the path ended; the step is kept in the history
    if step.status == FAILED:
        return Advance(FAILED, True)
    if ORDER[step.status] > ORDER[current]:
        return Advance(step.status, True)
    return Advance(current, False)
