"""planner handlers, one per consumed topic. For now each records the event (idempotently, in one unit
of work) in the service's received_events and acknowledges it; the service's own issue gives each its
decision."""

from __future__ import annotations

from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    JOB_FAILED,
    POLICY_UPDATED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SUBJECT_FLAGGED,
    SWAP_COMPLETED,
    TREND_DETECTED,
)

# consumed topic -> the handler's name (its processed-event marks and log lines carry it)
HANDLED: dict[str, str] = {
    CONSENT_CHANGED: "consent.changed",
    TREND_DETECTED: "trend.detected",
    SWAP_COMPLETED: "swap.completed",
    RENDER_COMPLETED: "render.completed",
    PUBLISH_COMPLETED: "publish.completed",
    POLICY_UPDATED: "policy.updated",
    SUBJECT_FLAGGED: "subject.flagged",
    JOB_FAILED: "job.failed",
}
