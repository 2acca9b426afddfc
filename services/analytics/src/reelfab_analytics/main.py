"""analytics service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

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
    for topic, handle in bootstrap(ctx).items():
        ctx.bus.subscribe(topic, handle)


main = entry_point(SPEC, wire)
