"""A Kafka bus with several subscriptions in one group (the planner has eight) starts them together: the
group rebalances once, not once per subscription, and every subscription consumes afterwards. Started one
after another (FastStream's broker.start()), each consumer's start waited for its own rebalance while the
ones already in paused: the planner took 14-26 s to start on the test stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import eventually
from tests.contract.conftest import KafkaHarness
from tests.contract.records import swap_requested

pytestmark = [pytest.mark.kafka]
SUBSCRIPTIONS = 6


async def test_a_groups_subscriptions_join_in_one_rebalance_and_all_consume(stack: Any) -> None:
    harness = KafkaHarness(stack)
    try:
        topics = [await harness.topic(partitions=2) for _ in range(SUBSCRIPTIONS)]
        group = f"together-{uuid.uuid4().hex[:8]}"
        seen: dict[str, list[str]] = {t.name: [] for t in topics}
        consumer = harness.bus("together")
        for topic in topics:

            async def handle(event: Any, name: str = topic.name) -> None:
                seen[name].append(event.record.job_id)

            consumer.subscribe(topic, handle, group=group)
        await consumer.start()
        # the group's generation counts its rebalances: one per join when they came one by one
        generations = {sub.consumer._coordinator.generation  # noqa: SLF001 - aiokafka keeps it private
                       for sub in consumer.broker.subscribers}  # type: ignore[attr-defined]
        assert max(generations) <= 2, f"{SUBSCRIPTIONS} subscriptions took {max(generations)} rebalances"
        assert all(sub.consumer.assignment() for sub in consumer.broker.subscribers)  # type: ignore[attr-defined]
        producer = harness.bus("driver")
        await producer.start()
        for n, topic in enumerate(topics):
            await producer.publish(topic, swap_requested(f"job-together-{n}"))
        await eventually(lambda: all(len(ids) == 1 for ids in seen.values()), timeout=20)
        await consumer.stop()
    finally:
        await harness.close()
