"""analytics handlers, one per consumed topic. For now each records the event (idempotently, in one unit
of work) in the service's received_events and acknowledges it; the service's own issue gives each its
decision."""

from __future__ import annotations

from reelfab.contracts.topics import ENGAGEMENT_OBSERVED, JOB_FAILED, PUBLISH_COMPLETED

# consumed topic -> the handler's name (its processed-event marks and log lines carry it)
HANDLED: dict[str, str] = {
    PUBLISH_COMPLETED: "publish.completed",
    ENGAGEMENT_OBSERVED: "engagement.observed",
    JOB_FAILED: "job.failed",
}
