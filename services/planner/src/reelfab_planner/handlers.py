"""planner handlers, one per consumed topic. For now each records the event (idempotently) in
the service's received_events and acknowledges it; the service's own issue gives each its decision."""

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
from reelfab.service import HandlerFactory, record_received

HANDLERS: dict[str, HandlerFactory] = {
    CONSENT_CHANGED: lambda ctx: record_received(ctx, "consent.changed"),
    TREND_DETECTED: lambda ctx: record_received(ctx, "trend.detected"),
    SWAP_COMPLETED: lambda ctx: record_received(ctx, "swap.completed"),
    RENDER_COMPLETED: lambda ctx: record_received(ctx, "render.completed"),
    PUBLISH_COMPLETED: lambda ctx: record_received(ctx, "publish.completed"),
    POLICY_UPDATED: lambda ctx: record_received(ctx, "policy.updated"),
    SUBJECT_FLAGGED: lambda ctx: record_received(ctx, "subject.flagged"),
    JOB_FAILED: lambda ctx: record_received(ctx, "job.failed"),
}
