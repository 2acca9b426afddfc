"""How long a service takes to start its consumers: the planner (eight subscriptions in its group), each
round a fresh group and schema, with the bus's start (every subscriber joining at once) beside
FastStream's own broker.start() (one subscriber after another, each waiting for its rebalance), rounds
interleaved so both see the same machine.

Measured: from bus.start() called to returned (every consumer has partitions; /readyz turns 200 then),
and the group's generation after it (how many rebalances the start cost). The local stack must run
(`reelfab up`, or REELFAB_* pointing at another).

    .venv/bin/python -m bench.service_start [--rounds 4]

The last line reads ``service start: together <T> s, one by one <T> s, ratio <R>`` (medians)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
import uuid
from typing import Any

from reelfab.bus import kafka as kafka_bus
from reelfab.bus.base import Bus
from reelfab.devtools.embedded import free_port
from reelfab.service import run_service
from reelfab.settings import Settings
from reelfab_planner import main as planner_main


async def _one_by_one(self: Any) -> None:  # FastStream's broker.start(), as the bus called it before
    await self.broker.start()
    self.committer.start()


async def start_once(settings: Settings, one_by_one: bool) -> tuple[float, int]:
    marks: dict[str, float] = {}
    original_start, bus_start = kafka_bus.KafkaBus._start, Bus.start  # noqa: SLF001 - the baseline swaps it
    generations: list[int] = []

    async def timed(self: Any) -> None:
        marks["called"] = time.monotonic()
        await bus_start(self)
        marks["started"] = time.monotonic()
        generations.extend(s.consumer._coordinator.generation  # noqa: SLF001 - aiokafka keeps it private
                           for s in self.broker.subscribers if getattr(s, "consumer", None) is not None)

    run = uuid.uuid4().hex[:8]
    spec = dataclasses.replace(planner_main.SPEC, name=f"bench-planner-{run}", db_schema=f"bench_planner_{run}")
    stop = asyncio.Event()
    kafka_bus.KafkaBus._start = _one_by_one if one_by_one else original_start  # type: ignore[method-assign]
    Bus.start = timed  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(run_service(spec, settings.model_copy(update={"http_port": free_port()}),
                                               planner_main.wire, stop, handle_signals=False))
        while "started" not in marks:
            if task.done():
                await task  # raises what stopped it
            await asyncio.sleep(0.02)
        stop.set()
        await task
    finally:
        kafka_bus.KafkaBus._start = original_start  # type: ignore[method-assign]
        Bus.start = bus_start  # type: ignore[method-assign]
    return marks["started"] - marks["called"], max(generations, default=0)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    settings = Settings(log_level="WARNING", consumer_session_timeout_ms=6000, consumer_heartbeat_interval_ms=300)
    results: dict[str, list[tuple[float, int]]] = {"together": [], "one by one": []}
    for n in range(args.rounds):
        for name in ("together", "one by one"):
            results[name].append(await start_once(settings, one_by_one=name == "one by one"))
            print(f"  round {n + 1}: {name:10s} {results[name][-1][0]:6.2f} s, generation {results[name][-1][1]}", flush=True)
    median = {name: statistics.median(t for t, _ in rows) for name, rows in results.items()}
    print(f"service start: together {median['together']:.2f} s, one by one {median['one by one']:.2f} s, "
          f"ratio {median['one by one'] / median['together']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
