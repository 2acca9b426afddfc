"""Idempotent handling and the transactional outbox, on real PostgreSQL, through both adapters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from reelfab.bus import Event
from reelfab.bus.idempotency import handle_once, was_processed
from reelfab.bus.outbox import H_OUTBOX_ID, H_OUTBOX_SOURCE, Outbox, OutboxRelay
from tests.conftest import eventually
from tests.contract.conftest import Harness
from tests.contract.records import swap_requested

pytestmark = pytest.mark.postgres


async def test_a_redelivered_event_changes_nothing(harness: Harness, pg_pool: Any, delivery_schema: str) -> None:
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=1)
    outcomes: list[bool] = []

    async def handler(event: Event[Any]) -> None:
        async def work(conn: Any) -> None:
            await conn.execute(f'INSERT INTO "{schema}".jobs VALUES ($1, 1)', event.record.job_id)

        ran, _ = await handle_once(pg_pool, schema, event, "jobs", work)
        outcomes.append(ran)

    bus = harness.bus("swapper")
    bus.subscribe(topic, handler)
    await bus.start()
    record = swap_requested("job-twice")
    await bus.publish(topic, record)
    await bus.publish(topic, record)  # the same event delivered again (at-least-once)
    await bus.publish(topic, swap_requested("job-other"))
    await eventually(lambda: len(outcomes) == 3)
    assert outcomes == [True, False, True]
    rows = await pg_pool.fetch(f'SELECT job_id FROM "{schema}".jobs ORDER BY job_id')
    assert [r["job_id"] for r in rows] == ["job-other", "job-twice"]
    assert await was_processed(pg_pool, schema, record["event_id"])


async def test_a_failed_handler_leaves_no_processed_mark_so_the_retry_runs(harness: Harness, pg_pool: Any, delivery_schema: str) -> None:
    schema = delivery_schema
    attempts: list[int] = []

    async def handler(event: Event[Any]) -> None:
        async def work(conn: Any) -> None:
            attempts.append(event.attempt)
            if len(attempts) == 1:
                raise ConnectionResetError("lost the connection mid-transaction")

        await handle_once(pg_pool, schema, event, "jobs", work)

    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    bus.subscribe(topic, handler)
    await bus.start()
    record = swap_requested("job-retry")
    await bus.publish(topic, record)
    # a lost connection is an outage, not the message's fault: retried without spending an attempt
    await eventually(lambda: attempts == [1, 1])
    assert await was_processed(pg_pool, schema, record["event_id"])


async def _business_write(pg_pool: Any, schema: str, outbox: Outbox, topic: Any, jobs: list[str]) -> None:
    for job in jobs:
        async with pg_pool.acquire() as conn, conn.transaction():
            await conn.execute(f'INSERT INTO "{schema}".jobs VALUES ($1, 1)', job)
            await outbox.add(conn, topic, swap_requested(job))


async def _published_jobs(harness: Harness, topic: Any) -> list[str]:
    from reelfab.contracts.codec import default_codec

    codec = default_codec()
    return [codec.decode(m.value).value["job_id"] for m in await harness.messages(topic.name)]


async def test_outbox_rows_committed_before_a_crash_are_published_once(harness: Harness, pg_pool: Any, delivery_schema: str) -> None:
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=1)
    bus = harness.bus("planner")
    await bus.start()
    outbox = Outbox(schema, bus)
    await _business_write(pg_pool, schema, outbox, topic, ["job-1", "job-2"])
    # a rolled-back transaction leaves neither the row nor the event
    with pytest.raises(RuntimeError):
        async with pg_pool.acquire() as conn, conn.transaction():
            await conn.execute(f'INSERT INTO "{schema}".jobs VALUES ($1, 1)', "job-rolled-back")
            await outbox.add(conn, topic, swap_requested("job-rolled-back"))
            raise RuntimeError("the business transaction failed")
    assert await _published_jobs(harness, topic) == []  # the process "died" before the relay ran

    relay = OutboxRelay(pg_pool, schema, bus)
    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    assert await _published_jobs(harness, topic) == ["job-1", "job-2"]
    assert await relay.pending() == 0
    [first, _] = await harness.messages(topic.name)
    assert dict(first.headers)[H_OUTBOX_SOURCE] == schema.encode()


async def test_outbox_relay_dying_between_publish_and_mark_publishes_nothing_twice(
    harness: Harness, pg_pool: Any, delivery_schema: str
) -> None:
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=2)
    bus = harness.bus("planner")
    await bus.start()
    await _business_write(pg_pool, schema, Outbox(schema, bus), topic, ["job-1", "job-2", "job-3"])

    async def die(_ids: list[int]) -> None:
        raise KeyboardInterrupt("the relay's process died after Kafka acknowledged")

    with pytest.raises(KeyboardInterrupt):
        await OutboxRelay(pg_pool, schema, bus, after_publish=die).relay_once()
    assert await OutboxRelay(pg_pool, schema, bus).pending() == 3  # published, but not marked

    await _business_write(pg_pool, schema, Outbox(schema, bus), topic, ["job-4"])
    restarted = OutboxRelay(pg_pool, schema, bus)
    assert await restarted.relay_once() == 1  # recovery marked 1..3; only job-4 is sent
    assert sorted(await _published_jobs(harness, topic)) == ["job-1", "job-2", "job-3", "job-4"]
    assert await restarted.pending() == 0
    marked = await pg_pool.fetch(f'SELECT kafka_partition, kafka_offset FROM "{schema}".outbox ORDER BY id')
    assert all(r["kafka_offset"] is not None for r in marked)


async def test_only_one_relay_per_schema_runs_at_a_time(harness: Harness, pg_pool: Any, delivery_schema: str) -> None:
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=1)
    bus = harness.bus("planner")
    await bus.start()
    stop = asyncio.Event()
    relays = [OutboxRelay(pg_pool, schema, bus, poll_interval_s=0.01) for _ in range(2)]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    await _business_write(pg_pool, schema, Outbox(schema, bus), topic, [f"job-{i}" for i in range(20)])
    await eventually(lambda: _all_marked(relays[0]))
    stop.set()
    await asyncio.gather(*tasks)
    assert sorted(await _published_jobs(harness, topic)) == sorted(f"job-{i}" for i in range(20))


async def test_a_committed_row_wakes_the_relay_at_once_and_a_rolled_back_one_never_leaves(
    harness: Harness, pg_pool: Any, delivery_schema: str
) -> None:
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=1)
    bus = harness.bus("planner")
    await bus.start()
    stop = asyncio.Event()
    relay = OutboxRelay(pg_pool, schema, bus, poll_interval_s=60.0)  # it would poll only once a minute
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(1.0)  # it has looked, found nothing and waits
    outbox = Outbox(schema, bus)
    with pytest.raises(RuntimeError):
        async with pg_pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, topic, swap_requested("rolled-back"))
            raise RuntimeError("the business transaction fails")
    started = asyncio.get_running_loop().time()
    await _business_write(pg_pool, schema, outbox, topic, ["job-now"])
    await eventually(lambda: _all_marked(relay), timeout=10.0)  # the commit's notification, not the poll
    assert asyncio.get_running_loop().time() - started < 10.0
    stop.set()
    await task
    assert await _published_jobs(harness, topic) == ["job-now"]


async def _all_marked(relay: OutboxRelay) -> bool:
    return await relay.pending() == 0


CRASHING_RELAY = """
import asyncio, os, sys
from reelfab.bus.kafka import KafkaBus
from reelfab.bus.outbox import OutboxRelay
from reelfab.contracts.codec import default_codec
from reelfab.db import create_pool
from tests.conftest import make_settings

async def main(schema):
    settings = make_settings()
    pool = await create_pool(settings)
    bus = KafkaBus(settings, "planner", default_codec())
    await bus.start()
    async def die(ids):
        os._exit(17)  # no cleanup, no mark: as a killed pod
    await OutboxRelay(pool, schema, bus, after_publish=die).relay_once()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.kafka
async def test_outbox_survives_a_killed_relay_process(stack: Any, pg_pool: Any, delivery_schema: str) -> None:
    from tests.contract.conftest import KafkaHarness

    harness = KafkaHarness(stack)
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=3)
    bus = harness.bus("planner")
    await bus.start()
    try:
        await _business_write(pg_pool, schema, Outbox(schema, bus), topic, [f"job-{i}" for i in range(5)])
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", CRASHING_RELAY, schema], cwd=os.getcwd(), capture_output=True, timeout=120
        )
        assert proc.returncode == 17, proc.stderr.decode()[-2000:]
        assert sorted(await _published_jobs(harness, topic)) == [f"job-{i}" for i in range(5)]
        relay = OutboxRelay(pg_pool, schema, bus)
        assert await relay.pending() == 5
        assert await relay.relay_once() == 0  # all five were found on the topic, none re-sent
        assert await relay.pending() == 0
        assert sorted(await _published_jobs(harness, topic)) == [f"job-{i}" for i in range(5)]
        ids = [int(dict(m.headers)[H_OUTBOX_ID]) for m in await harness.messages(topic.name)]
        assert len(ids) == len(set(ids)) == 5
    finally:
        await harness.close()


async def test_a_relay_whose_lock_connection_dies_takes_the_lock_again_before_relaying(
    harness: Harness, pg_pool: Any, delivery_schema: str
) -> None:
    """PostgreSQL restarting kills the connection that holds a relay's advisory lock; the relay must
    not go on relaying without it (a standby would take the lock and both would send)."""
    schema = delivery_schema
    await pg_pool.execute(f'CREATE TABLE "{schema}".jobs (job_id text, seen int)')
    topic = await harness.topic(partitions=1)
    bus = harness.bus("planner")
    await bus.start()
    stop = asyncio.Event()
    relay = OutboxRelay(pg_pool, schema, bus, poll_interval_s=0.01)
    task = asyncio.create_task(relay.run(stop))
    outbox = Outbox(schema, bus)
    await _business_write(pg_pool, schema, outbox, topic, ["job-before"])
    await eventually(lambda: _all_marked(relay))

    key = relay._lock_key  # noqa: SLF001

    async def holder() -> int | None:
        return await pg_pool.fetchval(  # type: ignore[no-any-return]
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = $1 AND objid::bigint = $2", (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)

    first = await holder()
    assert first is not None, "the relay holds its lock"
    await pg_pool.execute("SELECT pg_terminate_backend($1)", first)  # what a restart does to it
    await eventually(lambda: _holder_changed(holder, first), timeout=20)
    await _business_write(pg_pool, schema, outbox, topic, [f"job-after-{i}" for i in range(5)])
    await eventually(lambda: _all_marked(relay))
    stop.set()
    await asyncio.wait_for(task, 10)
    assert sorted(await _published_jobs(harness, topic)) == ["job-after-0", "job-after-1", "job-after-2",
                                                              "job-after-3", "job-after-4", "job-before"]


async def _holder_changed(holder: Any, old: int) -> bool:
    now = await holder()
    return now is not None and now != old
