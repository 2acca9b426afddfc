"""Several services in one process, each with its own bus consumers, schema and HTTP port, as
`make demo` runs the factory on one machine (and the end-to-end tests run it too)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from types import ModuleType

import httpx

from reelfab.service import BusFactory, ServiceContext, kafka_bus, run_service
from reelfab.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningService:
    """A service started with run_service in this event loop; ``stop`` ends it as SIGTERM would.
    ``ctx`` is its context once wired (the demo reaches the planner, analytics and review desk there)."""

    def __init__(self, module: ModuleType, settings: Settings, *, schema: str | None = None,
                 bus_factory: BusFactory = kafka_bus) -> None:
        self.spec = dataclasses.replace(module.SPEC, db_schema=schema or module.SPEC.db_schema)
        self.port = free_port()
        self.settings = settings.model_copy(update={"http_port": self.port})
        self.stop_event = asyncio.Event()
        self.ctx: ServiceContext | None = None

        def wire(ctx: ServiceContext) -> None:
            module.wire(ctx)
            self.ctx = ctx

        self.task = asyncio.create_task(run_service(self.spec, self.settings, wire, self.stop_event, bus_factory,
                                                     handle_signals=False))

    def extra(self, name: str) -> object:
        """What the service's wiring left in ``ctx.extras[name]`` (KeyError naming it when absent)."""
        if self.ctx is None or name not in self.ctx.extras:
            raise KeyError(f"{self.spec.name} has no {name!r} wired (yet)")
        return self.ctx.extras[name]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 90.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.task.done():
                    self.task.result()  # the service's own error, if it died
                    raise RuntimeError(f"{self.spec.name} stopped before it was ready")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.spec.name} not ready within {timeout:.0f} s")
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 60)
