"""publisher: its handlers wired to real or fake adapters."""

from __future__ import annotations

from reelfab.bus.message import Handler
from reelfab.service import ReceivedEvents, ServiceContext, record_received

from .handlers import HANDLED


def bootstrap(ctx: ServiceContext, *, received: ReceivedEvents | None = None) -> dict[str, Handler]:
    """One handler per consumed topic on ``ctx``'s unit of work, recording into the service's
    received_events table (PostgreSQL with a pool, else in memory) or into ``received`` (a fake)."""
    return {topic: record_received(ctx, name, received) for topic, name in HANDLED.items()}
