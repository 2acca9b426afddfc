"""analytics handlers, one per consumed topic. For now each records the event (idempotently) in
the service's received_events and acknowledges it; the service's own issue gives each its decision."""

from __future__ import annotations

from reelfab.service import HandlerFactory, record_received

HANDLERS: dict[str, HandlerFactory] = {
    "reelfab.publish.completed.v1": lambda ctx: record_received(ctx, "publish.completed"),
    "reelfab.engagement.observed.v1": lambda ctx: record_received(ctx, "engagement.observed"),
    "reelfab.job.failed.v1": lambda ctx: record_received(ctx, "job.failed"),
}
