"""planner service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

from . import handlers

SPEC = ServiceSpec(
    name="planner",
    package=__package__ or "reelfab_planner",
    schema="planner",
    default_port=8082,
    consumes=(
        "reelfab.consent.changed.v1",
        "reelfab.trend.detected.v1",
        "reelfab.swap.completed.v1",
        "reelfab.render.completed.v1",
        "reelfab.publish.completed.v1",
        "reelfab.policy.updated.v1",
        "reelfab.subject.flagged.v1",
        "reelfab.job.failed.v1",
    ),
    produces=(
        "reelfab.swap.requested.v1",
        "reelfab.job.failed.v1",
    ),
    description="Templates, music, trends and policy in; swap jobs out.",
)


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
