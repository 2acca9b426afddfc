"""swapper-gpu service: wiring only (DESIGN.md layout). Decisions live in its domain modules."""

from __future__ import annotations

from reelfab.service import ServiceSpec, entry_point, subscribe_handlers

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


wire = subscribe_handlers(handlers.HANDLERS)
main = entry_point(SPEC, wire)
