"""publisher service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

import asyncio

from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import get_settings

from . import handlers

SPEC = ServiceSpec(
    name="publisher",
    package=__package__ or "reelfab_services.publisher",
    schema="publisher",
    default_port=8085,
    consumes=(
        "reelfab.consent.changed.v1",
        "reelfab.render.completed.v1",
    ),
    produces=(
        "reelfab.publish.completed.v1",
        "reelfab.engagement.observed.v1",
        "reelfab.job.failed.v1",
    ),
    description="Rendered video in; platform post and engagement read-back out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handler in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, handler(ctx))


def main() -> None:
    asyncio.run(run_service(SPEC, get_settings(), wire))
