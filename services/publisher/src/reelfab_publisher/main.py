"""publisher service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

from . import handlers

SPEC = ServiceSpec(
    name="publisher",
    package=__package__ or "reelfab_publisher",
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


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
