"""publisher service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    ENGAGEMENT_OBSERVED,
    JOB_FAILED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
)
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from .bootstrap import bootstrap

SPEC = ServiceSpec(
    name="publisher",
    package=__package__ or "reelfab_publisher",
    db_schema="publisher",
    default_port=8085,
    consumes=(
        CONSENT_CHANGED,
        RENDER_COMPLETED,
    ),
    produces=(
        PUBLISH_COMPLETED,
        ENGAGEMENT_OBSERVED,
        JOB_FAILED,
    ),
    description="Rendered video in; platform post and engagement read-back out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handle in bootstrap(ctx).items():
        ctx.bus.subscribe(topic, handle)


main = entry_point(SPEC, wire)
