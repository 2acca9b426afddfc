"""analytics service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain
modules (reward, posts, posteriors, rules, policy); the policy flusher runs beside the consumers."""

from __future__ import annotations

from reelfab.contracts.topics import (
    ENGAGEMENT_OBSERVED,
    JOB_FAILED,
    POLICY_UPDATED,
    PUBLISH_COMPLETED,
    SUBJECT_FLAGGED,
)
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from .bootstrap import bootstrap
from .flusher import PolicyFlusher
from .handlers import handlers

SPEC = ServiceSpec(
    name="analytics",
    package=__package__ or "reelfab_analytics",
    db_schema="analytics",
    default_port=8086,
    consumes=(
        PUBLISH_COMPLETED,
        ENGAGEMENT_OBSERVED,
        JOB_FAILED,
    ),
    produces=(
        POLICY_UPDATED,
        SUBJECT_FLAGGED,
        JOB_FAILED,  # the bus announces a dead-lettered job-keyed message there
    ),
    description="Engagement in; per-arm posteriors (policy) and flags out.",
)


def wire(ctx: ServiceContext) -> None:
    analytics = bootstrap(ctx)
    for topic, handle in handlers(analytics).items():
        ctx.bus.subscribe(topic, handle)
    flusher = PolicyFlusher(analytics, pool=ctx.pool, outbox=ctx.outbox, bus=ctx.bus,
                            interval_s=ctx.settings.analytics_policy_flush_s)
    ctx.extras["analytics"] = analytics
    ctx.extras["policy_flusher"] = flusher
    ctx.on_start.append(flusher.start)
    ctx.on_stop.append(flusher.stop)


main = entry_point(SPEC, wire)
