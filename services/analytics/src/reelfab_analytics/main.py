"""analytics service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

from . import handlers

SPEC = ServiceSpec(
    name="analytics",
    package=__package__ or "reelfab_analytics",
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
        "reelfab.job.failed.v1",  # the bus announces a dead-lettered job-keyed message there
    ),
    description="Engagement in; per-arm posteriors (policy) and flags out.",
)


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
