"""consent-registry service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

import asyncio

from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import get_settings

from . import handlers

SPEC = ServiceSpec(
    name="consent-registry",
    package=__package__ or "reelfab_services.consent_registry",
    schema="consent_registry",
    default_port=8081,
    consumes=(
        "reelfab.publish.completed.v1",
        "reelfab.subject.flagged.v1",
        "reelfab.job.failed.v1",
    ),
    produces=(
        "reelfab.consent.changed.v1",
    ),
    description="Faces, consent records, signed leases, revocation and the audit chain.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handler in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, handler(ctx))


def main() -> None:
    asyncio.run(run_service(SPEC, get_settings(), wire))
