"""Resident memory of each media-path service at idle and under load.

Starts a stack of its own (the chaos suite's harness: Kafka, PostgreSQL and the consent registry,
swapper-gpu and post-producer as `reelfab serve` processes on free ports in a temp folder; nothing
shared is touched), then reports each service's RSS (VmRSS of the process and its children, from /proc):

* idle, after a warm-up job went through (engines and models loaded);
* peak while six jobs run (540x960, 5 s templates, classical engine) and six concurrent /check
  requests with 4000x4000 PNGs hit the registry (the face-image limit's worst accepted case);
* after, once everything settled.

    .venv/bin/python -m bench.service_memory
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time

import httpx

from bench.registry_memory import flat_png, rss_mib
from tests.chaos.conftest import World
from tests.chaos.harness import ChaosStack
from tests.chaos.ledger import Ledger

SERVICES = ("consent-registry", "swapper-gpu", "post-producer")
JOBS = 6


def snapshot(world: World) -> dict[str, float]:
    return {name: rss_mib(world.stack.service(name).pid or 0) for name in SERVICES}


async def main() -> int:
    from datetime import UTC, datetime, timedelta

    stack = ChaosStack()
    world = World(stack)
    ok = False
    try:
        stack.up()
        await world.start()  # enrols a subject and runs a warm-up job
        await asyncio.sleep(3)
        idle = snapshot(world)
        peak = dict(idle)
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                for name, value in snapshot(world).items():
                    peak[name] = max(peak[name], value)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        ledger = Ledger(world.bus, datetime.now(UTC) - timedelta(seconds=2))
        for i in range(JOBS):
            await world.submit(ledger, label=f"mem{i}")
        registry = stack.service("consent-registry")
        body = {"subject": "nobody", "purpose": "swap", "platform": "tiktok", "commercial": True}
        async with httpx.AsyncClient(base_url=registry.url, timeout=600,
                                     headers={"Authorization": f"Bearer {stack.reader_token}"}) as client:
            answers = await asyncio.gather(*(
                client.post("/check", json={**body, "image_base64": base64.b64encode(flat_png(4000, i)).decode()})
                for i in range(6)))
        seen = await ledger.settle(timeout=600)
        elapsed = time.monotonic() - started
        done.set()
        await sampler
        await asyncio.sleep(3)
        after = snapshot(world)
        completed = sum(1 for o in seen.values() if o.rendered)
        print(f"{JOBS} jobs ({completed} rendered) and 6 concurrent 16 MP /check requests "
              f"(answers {sorted({a.status_code for a in answers})}) in {elapsed:.0f} s")
        print(f"{'service':18} {'idle MiB':>9} {'peak MiB':>9} {'after MiB':>10}")
        for name in SERVICES:
            print(f"{name:18} {idle[name]:9.0f} {peak[name]:9.0f} {after[name]:10.0f}")
        ok = completed == JOBS
        return 0 if ok else 1
    finally:
        await world.stop()
        stack.close(keep=not ok)  # a failed run keeps its logs/ and state/ for a look
        if not ok:
            print(f"kept {stack.root}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
