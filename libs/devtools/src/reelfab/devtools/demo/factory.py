"""The six services in one process, as `make demo` runs them: over the local Kafka (consumer groups
named demo-<service>, apart from services the user runs, moved to the end of their topics at the start
of each run) or, ``embedded``, on one in-process bus; the
planner, analytics, swapper and post-producer on PostgreSQL schemas of the demo's own, dropped at the
start of each run (a run starts clean); the consent registry and the publisher on their usual schemas
(the registry's keys sign the leases already on the consent topic; the publisher holds the accounts)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import asyncpg

from reelfab.bus.base import Bus
from reelfab.bus.memory import InMemoryBus, MemoryLog
from reelfab.contracts.codec import default_codec
from reelfab.devtools.embedded import RunningService
from reelfab.settings import Settings

FRESH_SCHEMAS = {"planner": "demo_planner", "analytics": "demo_analytics", "swapper-gpu": "demo_swapper",
                 "post-producer": "demo_post_producer", "publisher": "demo_publisher"}


def bus_factory(embedded: bool) -> Any:
    """(settings, service) -> its bus: Kafka with a demo-<service> group, or the shared in-process log."""
    log = MemoryLog() if embedded else None

    def make(settings: Settings, service: str) -> Bus:
        codec = default_codec(settings)
        if log is not None:
            return InMemoryBus(settings, f"demo-{service}", codec, log=log)
        from reelfab.bus.kafka import KafkaBus

        return KafkaBus(settings, f"demo-{service}", codec)

    return make


WORKERS = ("planner", "swapper-gpu", "post-producer", "publisher", "analytics")  # each on group demo-<service>


async def skip_earlier_work(settings: Settings, services: tuple[str, ...] = WORKERS) -> int:
    """Commit the end of each work topic for every demo-<service> group before the services start, so a
    run consumes only what it produces: nothing an aborted run left unconsumed (its swap requests name
    files in a folder this run emptied), nothing other producers left on the user's stack. The consent
    topic is not touched (every service reads it whole, on a group of its own). How many were skipped."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from reelfab.consent.view import CONSENT_TOPIC
    from reelfab.contracts.topics import consumed_by

    skipped = 0
    for service in services:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=f"demo-{service}",
                                    enable_auto_commit=False)
        try:
            await consumer.start()
            cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - topics() does not keep it
            tps = [TopicPartition(t.name, p) for t in consumed_by(service) if t.name != CONSENT_TOPIC
                   for p in sorted(cluster.partitions_for_topic(t.name) or ())]
            if not tps:
                continue
            consumer.assign(tps)
            ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
            for tp in tps:
                done = await consumer.committed(tp)
                skipped += max(0, ends[tp] - max(done if done is not None else 0, starts[tp]))
            await consumer.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in tps})
        finally:
            await consumer.stop()
    return skipped


def fresh_schemas(*, own_publisher: bool) -> dict[str, str]:
    return {k: v for k, v in FRESH_SCHEMAS.items() if own_publisher or k != "publisher"}


async def drop_fresh_schemas(dsn: str, schemas: dict[str, str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas.values():
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@dataclass
class Factory:
    registry: RunningService
    planner: RunningService
    swapper: RunningService
    post: RunningService
    publisher: RunningService
    analytics: RunningService
    admin_token: str
    buses: Any  # the bus factory, for the demo's own bus

    @property
    def services(self) -> list[RunningService]:
        return [self.registry, self.planner, self.swapper, self.post, self.publisher, self.analytics]

    async def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop the five workers side by side, then the registry (a worker may still ask it while it
        stops). A service that has not stopped within ``timeout`` (its Kafka client waiting on a broker
        that went away) is cancelled. Never raises: the names of the services that had to be cancelled."""
        cancelled: list[str] = []

        async def one(service: RunningService) -> None:
            if service.task.done():
                return
            service.stop_event.set()
            try:
                await asyncio.wait_for(service.task, timeout)  # cancels it when the time is up
            except TimeoutError:
                cancelled.append(service.spec.name)
            except BaseException:  # noqa: BLE001 - its own error, logged by it; it has stopped either way
                return

        await asyncio.gather(*(one(s) for s in self.services[1:]))
        await one(self.registry)
        return cancelled


async def start_factory(registry_settings: Settings, worker_settings: Settings, *, embedded: bool,
                        own_publisher: bool, say: Any) -> Factory:
    """Start the registry, make its tokens, then the five others with a reader token; each ready."""
    from reelfab_analytics import main as analytics_main
    from reelfab_consent_registry import main as registry_main
    from reelfab_consent_registry import tokens
    from reelfab_planner import main as planner_main
    from reelfab_post_producer import main as post_main
    from reelfab_publisher import main as publisher_main
    from reelfab_swapper_gpu import main as swapper_main

    make_bus = bus_factory(embedded)
    schemas = fresh_schemas(own_publisher=own_publisher)
    await drop_fresh_schemas(registry_settings.postgres_dsn, schemas)
    if not embedded:
        from aiokafka.errors import KafkaError

        try:
            skipped = await skip_earlier_work(worker_settings)
        except (KafkaError, OSError) as exc:
            from .errors import DemoRefused

            raise DemoRefused(f"Kafka at {worker_settings.kafka_bootstrap} would not move the demo's consumer groups "
                              f"to the end of their topics ({type(exc).__name__}: {exc}); is the stack up (`make up`)?"
                              ) from None
        if skipped:  # for the log (stderr is the demo's log file): nothing the person watching must act on
            print(f"demo: {skipped} message(s) on the work topics from earlier runs (or services run by hand) left "
                  "unconsumed: this run's services start at the end of each topic", file=sys.stderr)
    registry = RunningService(registry_main, registry_settings, bus_factory=make_bus)
    started: list[RunningService] = [registry]
    try:
        await registry.ready()
        pool = await asyncpg.create_pool(registry_settings.postgres_dsn, min_size=1, max_size=2)
        try:
            tag = uuid.uuid4().hex[:6]
            admin = await tokens.create_token(pool, registry.spec.db_schema, f"demo-admin-{tag}", "admin")
            reader = await tokens.create_token(pool, registry.spec.db_schema, f"demo-worker-{tag}", "reader")
        finally:
            await pool.close()
        workers = worker_settings.model_copy(update={"consent_token": reader, "consent_registry_url": registry.url})

        def start(module: ModuleType, name: str) -> RunningService:
            service = RunningService(module, workers, schema=schemas.get(name), bus_factory=make_bus)
            started.append(service)
            return service

        planner, swapper = start(planner_main, "planner"), start(swapper_main, "swapper-gpu")
        post, publisher = start(post_main, "post-producer"), start(publisher_main, "publisher")
        analytics = start(analytics_main, "analytics")
        for service in started[1:]:
            await service.ready()
        say(f"six services up in this process ({'in-process bus' if embedded else 'Kafka ' + workers.kafka_bootstrap}"
            f", PostgreSQL {workers.postgres_host}:{workers.postgres_port})")
        return Factory(registry, planner, swapper, post, publisher, analytics, admin, make_bus)
    except BaseException:
        for service in reversed(started):
            if not service.task.done():
                service.stop_event.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(service.task, 30)
        raise
