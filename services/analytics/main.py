"""analytics service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

import asyncio

from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import get_settings

from . import handlers

SPEC = ServiceSpec(
    name="analytics",
    package=__package__ or "reelfab_services.analytics",
    schema="analytics",
    default_port=8086,
    consumes=(
        "reelfab.publish.completed.v1",
        "reelfab.engagement.observed.v1",
        "reelfab.job.failed.v1",
    ),
    produces=(
        "reelfab.policy.updated.v1",
        "reelfab.subject.flagged.v1",
    ),
    description="Engagement in; per-arm posteriors (policy) and flags out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handler in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, handler(ctx))


def main() -> None:
    asyncio.run(run_service(SPEC, get_settings(), wire))
