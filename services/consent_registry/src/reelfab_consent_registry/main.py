"""consent-registry service: wiring only (the service shape: docs/architecture.md). Decisions live in domain.py, use cases
in use_cases.py and audit_trail.py, storage in repository.py, adapters are chosen in bootstrap.py;
the HTTP API in api/; the CLI in cli.py."""

from __future__ import annotations

import asyncio
import contextlib

from reelfab.service import ServiceContext, ServiceSpec, entry_point

from . import handlers
from .bootstrap import PRODUCES, SCHEMA, bootstrap_postgres, setting

SPEC = ServiceSpec(
    name="consent-registry",
    package=__package__ or "reelfab_consent_registry",
    db_schema=SCHEMA,
    default_port=8081,
    consumes=tuple(handlers.HANDLERS),
    produces=PRODUCES,
    description="Faces, consent records, signed leases, revocation and the audit chain.",
)


def wire(ctx: ServiceContext) -> None:
    if ctx.pool is None:  # documentation only (AsyncAPI): no database, no registry
        for topic in handlers.HANDLERS:
            ctx.bus.subscribe(topic, _unused)
        return
    from .api import build_api
    from .keys import ensure_signing_key

    pool = ctx.pool
    wired = bootstrap_postgres(ctx.settings, pool, ctx.bus, schema=ctx.spec.db_schema, uow=ctx.uow)
    registry = wired.registry
    # REELFAB_CONSENT_CONSUMER_GROUP: a registry on a database of its own (a benchmark) must not
    # join the real registry's consumer group and take its events
    group = setting(ctx.settings.consent_consumer_group, ctx.spec.name)
    for topic, handle in wired.handlers.items():
        ctx.bus.subscribe(topic, handle, group=group)
    ctx.extras["registry"] = registry
    ctx.extras["api"] = build_api(registry, pool, ctx.spec.db_schema)

    async def first_key() -> None:
        await ensure_signing_key(pool, ctx.spec.db_schema, registry.wrapper)

    async def checkpoints() -> None:
        # signed audit checkpoints while the service runs; stopped with it
        ctx.extras["checkpoints"] = asyncio.create_task(registry.trail.run_checkpoints(), name="audit-checkpoints")

    async def stop_checkpoints() -> None:
        task = ctx.extras.get("checkpoints")
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    ctx.on_start.append(first_key)
    ctx.on_start.append(checkpoints)
    ctx.on_stop.append(stop_checkpoints)


async def _unused(_event: object) -> None:
    raise RuntimeError("documentation wiring only")


main = entry_point(SPEC, wire)
