"""publisher handlers, one per consumed topic. For now each records the event (idempotently) in
the service's received_events and acknowledges it; the service's own issue gives each its decision."""

from __future__ import annotations

from reelfab.contracts.topics import CONSENT_CHANGED, RENDER_COMPLETED
from reelfab.service import HandlerFactory, record_received

HANDLERS: dict[str, HandlerFactory] = {
    CONSENT_CHANGED: lambda ctx: record_received(ctx, "consent.changed"),
    RENDER_COMPLETED: lambda ctx: record_received(ctx, "render.completed"),
}
