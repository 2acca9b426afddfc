"""planner service: wiring only (the service shape: docs/architecture.md). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    JOB_FAILED,
    POLICY_UPDATED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SUBJECT_FLAGGED,
    SWAP_COMPLETED,
    SWAP_EXPEDITED,
    SWAP_REQUESTED,
    TREND_DETECTED,
)
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from .bootstrap import bootstrap

SPEC = ServiceSpec(
    name="planner",
    package=__package__ or "reelfab_planner",
    db_schema="planner",
    default_port=8082,
    consumes=(
        CONSENT_CHANGED,
        TREND_DETECTED,
        SWAP_COMPLETED,
        RENDER_COMPLETED,
        PUBLISH_COMPLETED,
        POLICY_UPDATED,
        SUBJECT_FLAGGED,
        JOB_FAILED,
    ),
    produces=(
        SWAP_REQUESTED,
        SWAP_EXPEDITED,
        JOB_FAILED,
    ),
    description="Templates, music, trends and policy in; swap jobs out.",
)


def wire(ctx: ServiceContext) -> None:
    for topic, handle in bootstrap(ctx).items():
        ctx.bus.subscribe(topic, handle)


main = entry_point(SPEC, wire)
