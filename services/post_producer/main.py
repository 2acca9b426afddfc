"""post-producer service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

import asyncio

from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import get_settings

from . import handlers

SPEC = ServiceSpec(
    name="post-producer",
    package=__package__ or "reelfab_services.post_producer",
    schema="post_producer",
    default_port=8084,
    consumes=(
        "reelfab.consent.changed.v1",
        "reelfab.swap.completed.v1",
    ),
    produces=(
        "reelfab.render.completed.v1",
        "reelfab.job.failed.v1",
    ),
    description="Mezzanine in; platform-spec, labelled, signed video out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handler in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, handler(ctx))


def main() -> None:
    asyncio.run(run_service(SPEC, get_settings(), wire))
