"""analytics handlers, one per consumed topic. For now each records the event (idempotently) in
the service's received_events and acknowledges it; the service's own issue gives each its decision."""

from __future__ import annotations

from reelfab.contracts.topics import ENGAGEMENT_OBSERVED, JOB_FAILED, PUBLISH_COMPLETED
from reelfab.service import HandlerFactory, record_received

HANDLERS: dict[str, HandlerFactory] = {
    PUBLISH_COMPLETED: lambda ctx: record_received(ctx, "publish.completed"),
    ENGAGEMENT_OBSERVED: lambda ctx: record_received(ctx, "engagement.observed"),
    JOB_FAILED: lambda ctx: record_received(ctx, "job.failed"),
}
