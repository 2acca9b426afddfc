"""swapper-gpu service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

import asyncio

from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import get_settings

from . import handlers

SPEC = ServiceSpec(
    name="swapper-gpu",
    package=__package__ or "reelfab_services.swapper_gpu",
    schema="swapper_gpu",
    default_port=8083,
    consumes=(
        "reelfab.consent.changed.v1",
        "reelfab.swap.requested.v1",
    ),
    produces=(
        "reelfab.swap.completed.v1",
        "reelfab.job.failed.v1",
    ),
    description="Swap jobs in; swapped mezzanine and face track out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handler in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, handler(ctx))


def main() -> None:
    asyncio.run(run_service(SPEC, get_settings(), wire))
