"""consent-registry service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

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


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
