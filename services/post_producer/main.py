"""post-producer service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

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


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
