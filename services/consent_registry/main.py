"""consent-registry service: wiring only (DESIGN.md layout). Decisions live in domain.py and
registry.py; the HTTP API in api.py; the CLI in cli.py."""

from __future__ import annotations

from reelfab.service import ServiceContext, ServiceSpec, entry_point

from . import handlers
from .bootstrap import SCHEMA, build_registry

SPEC = ServiceSpec(
    name="consent-registry",
    package=__package__ or "reelfab_services.consent_registry",
    schema=SCHEMA,
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
    if ctx.pool is None:  # documentation only (AsyncAPI): no database, no registry
        for topic in handlers.HANDLERS:
            ctx.bus.subscribe(topic, _unused)
        return
    from .api import build_api
    from .keys import ensure_signing_key

    registry = build_registry(ctx.settings, ctx.pool, ctx.bus, schema=ctx.spec.schema)
    for topic, make in handlers.HANDLERS.items():
        ctx.bus.subscribe(topic, make(ctx, registry))
    ctx.extras["registry"] = registry
    ctx.extras["api"] = build_api(registry, ctx.pool, ctx.spec.schema)

    async def first_key() -> None:
        await ensure_signing_key(ctx.pool, ctx.spec.schema, registry.wrapper)  # type: ignore[arg-type]

    ctx.on_start.append(first_key)


async def _unused(_event: object) -> None:
    raise RuntimeError("documentation wiring only")


main = entry_point(SPEC, wire)
