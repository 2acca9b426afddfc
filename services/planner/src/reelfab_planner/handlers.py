"""planner handlers, one per consumed topic. For now each records the event (idempotently) in
the service's received_events and acknowledges it; the service's own issue gives each its decision."""

from __future__ import annotations

from reelfab.service import HandlerFactory, record_received

HANDLERS: dict[str, HandlerFactory] = {
    "reelfab.consent.changed.v1": lambda ctx: record_received(ctx, "consent.changed"),
    "reelfab.trend.detected.v1": lambda ctx: record_received(ctx, "trend.detected"),
    "reelfab.swap.completed.v1": lambda ctx: record_received(ctx, "swap.completed"),
    "reelfab.render.completed.v1": lambda ctx: record_received(ctx, "render.completed"),
    "reelfab.publish.completed.v1": lambda ctx: record_received(ctx, "publish.completed"),
    "reelfab.policy.updated.v1": lambda ctx: record_received(ctx, "policy.updated"),
    "reelfab.subject.flagged.v1": lambda ctx: record_received(ctx, "subject.flagged"),
    "reelfab.job.failed.v1": lambda ctx: record_received(ctx, "job.failed"),
}
