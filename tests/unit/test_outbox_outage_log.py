"""The outbox relay says once that PostgreSQL is away, not once a second, and says when it is back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from reelfab.bus import outbox
from reelfab.bus.outbox import OutboxRelay


class DownPool:
    """A pool whose database is away for ``failures`` acquisitions, then answers (and the relay stops)."""

    def __init__(self, failures: int, stop: asyncio.Event) -> None:
        self.failures, self.stop = failures, stop

    def acquire(self) -> Any:
        pool = self

        class Acquired:
            async def __aenter__(self) -> Any:
                if pool.failures > 0:
                    pool.failures -= 1
                    raise ConnectionRefusedError("connection refused")
                pool.stop.set()  # back: enough for this test
                raise ConnectionRefusedError("stopping")

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Acquired()


async def test_a_long_outage_is_one_warning_and_its_end_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(stop: asyncio.Event, seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(outbox, "_wait", no_wait)
    stop = asyncio.Event()
    pool = DownPool(12, stop)
    relay = OutboxRelay(pool, "planner", bus=None)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(relay.run(stop), 5)
    assert pool.failures == 0 and stop.is_set()  # it tried 13 times
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "lost the database" in warnings[0]["event"]  # not 13
    assert warnings[0]["waiting_for"] and warnings[0]["schema"] == "planner"
