"""A service's outbox relay runs while its consumers are still starting. Starting Kafka consumers takes
seconds (each joins its group, and every join rebalances the group), and the first consumer handles
messages before the last has joined: what those first handlers commit to the outbox must leave at once,
not when start() returns (a trend's expedited jobs waited 12 s for it: CI, 2026-12-03).

The bus here is the in-process one with a start() that returns only when the test says (as a slow
group join would); PostgreSQL is real (the outbox, the relay and its lock)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from reelfab.bus.memory import InMemoryBus, MemoryLog
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import TREND_DETECTED
from reelfab.devtools.embedded import free_port
from reelfab.errors import StackError
from reelfab.service import ServiceContext, ServiceSpec, run_service
from reelfab.settings import Settings
from tests.conftest import eventually, make_settings, unique

pytestmark = [pytest.mark.postgres]


def trend(trend_id: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "detector",
            "trend_id": trend_id, "source": "test", "title": "a dance", "tags": ["dance"],
            "urgency": 0.9, "deadline": datetime.now(UTC) + timedelta(hours=1), "max_jobs": 1}


class SlowStartBus(InMemoryBus):
    """Its consumers run from the start; start() itself returns only once ``released`` is set."""

    def __init__(self, settings: Settings, service: str, log: MemoryLog, released: asyncio.Event) -> None:
        super().__init__(settings, service, default_codec(), log)
        self.released = released

    async def _start(self) -> None:
        await super()._start()
        await self.released.wait()


def echo_wire(ctx: ServiceContext) -> None:
    """A handler that answers trend "in" with trend "out", through the outbox."""
    assert ctx.uow is not None
    uow = ctx.uow

    async def on_trend(event: Any) -> None:
        if event.record.trend_id != "in":
            return
        async with uow.begin(event, "echo") as tx:
            if tx.fresh:
                await tx.publish(TREND_DETECTED, trend("out"))

    ctx.bus.subscribe(TREND_DETECTED, on_trend)


def trend_ids(log: MemoryLog) -> list[str]:
    codec = default_codec()
    return [codec.decode(m.value).value["trend_id"] for part in log.log_for(TREND_DETECTED) for m in part]


async def test_what_the_first_handlers_write_leaves_before_the_consumers_have_all_started() -> None:
    settings = make_settings(http_port=free_port())
    log, released = MemoryLog(), asyncio.Event()
    await InMemoryBus(settings, "driver", default_codec(), log).publish(TREND_DETECTED, trend("in"))
    spec = ServiceSpec(name=f"echo-{uuid.uuid4().hex[:6]}", package="reelfab", db_schema=unique("svcstart"),
                       default_port=0, consumes=(TREND_DETECTED,), produces=(TREND_DETECTED,))
    buses: list[SlowStartBus] = []

    def factory(s: Settings, service: str) -> SlowStartBus:
        buses.append(SlowStartBus(s, service, log, released))
        return buses[-1]

    stop = asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, echo_wire, stop, factory, handle_signals=False))
    try:
        await eventually(lambda: "out" in trend_ids(log), timeout=10)  # fails while the relay waits for start()
        assert buses and not buses[0].started  # start() had not returned: the relay did not wait for it
    finally:
        released.set()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    assert trend_ids(log).count("out") == 1  # sent once, not again once start() returned


class RefusingBus(InMemoryBus):
    """Kafka away: connecting (``at="connect"``) or starting the consumers (``at="start"``) fails."""

    def __init__(self, settings: Settings, service: str, at: str) -> None:
        super().__init__(settings, service, default_codec())
        self.at, self.stopped = at, False

    async def _connect(self) -> None:
        if self.at == "connect":
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]")

    async def _start(self) -> None:
        await super()._start()
        if self.at == "start":
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]")

    async def _stop(self) -> None:
        self.stopped = True
        await super()._stop()


@pytest.mark.parametrize("at", ["connect", "start"])
async def test_kafka_away_at_start_is_named_and_leaves_nothing_running(at: str) -> None:
    settings = make_settings(http_port=free_port(), kafka_bootstrap="127.0.0.1:1")
    spec = ServiceSpec(name=f"echo-{uuid.uuid4().hex[:6]}", package="reelfab", db_schema=unique("svcstart"),
                       default_port=0, consumes=(TREND_DETECTED,), produces=(TREND_DETECTED,))
    buses: list[RefusingBus] = []

    def factory(s: Settings, service: str) -> RefusingBus:
        buses.append(RefusingBus(s, service, at))
        return buses[-1]

    before = {t for t in asyncio.all_tasks() if not t.done()}
    with pytest.raises(StackError, match=r"Kafka does not answer at 127\.0\.0\.1:1 .*make up.*REELFAB_KAFKA_BOOTSTRAP"):
        await asyncio.wait_for(run_service(spec, settings, echo_wire, asyncio.Event(), factory, handle_signals=False), 30)
    assert buses[0].stopped  # what had connected was closed
    left = {t.get_name() for t in asyncio.all_tasks() if not t.done()} - {t.get_name() for t in before}
    assert "outbox-relay" not in left and "http" not in left, left
