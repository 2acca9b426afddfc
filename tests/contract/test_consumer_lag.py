"""reelfab_consumer_lag_messages: what a group has not settled yet, measured against the real broker's
end offsets while the handler is busy (when the consumer itself fetches nothing); back to zero once the
handler catches up, and gone when the bus stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reelfab.bus.lag import group_label
from tests.conftest import eventually
from tests.contract.conftest import KafkaHarness
from tests.contract.records import swap_requested

pytestmark = [pytest.mark.kafka]


def lag(service: str, group: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value("reelfab_consumer_lag_messages",
                                     {"service": service, "group": group, "topic": topic})


async def test_lag_counts_unsettled_messages_and_returns_to_zero(stack: Any) -> None:
    harness = KafkaHarness(stack)
    try:
        topic = await harness.topic(partitions=2)
        producer = harness.bus("planner")
        await producer.start()
        release, seen = asyncio.Event(), []

        async def slow(event: Any) -> None:
            seen.append(event.record.job_id)
            await release.wait()

        consumer = harness.bus("lagging", consumer_lag_interval_s=0.3)
        consumer.subscribe(topic, slow, group="lagging-swappers")
        await consumer.start()
        for n in range(6):
            await producer.publish(topic, swap_requested(f"job-lag-{n}"))
        await eventually(lambda: seen)  # one is in the handler, held there

        def behind() -> float:
            return lag("lagging", "lagging-swappers", topic.name) or 0.0

        await eventually(lambda: behind() >= 5, timeout=20)  # the held one and those after it
        assert behind() <= 6
        release.set()
        await eventually(lambda: len(seen) == 6)
        await eventually(lambda: behind() == 0, timeout=20)
        await consumer.stop()
        assert lag("lagging", "lagging-swappers", topic.name) is None  # a stopped bus reports nothing
    finally:
        await harness.close()


def test_a_consent_views_instance_id_is_not_a_label() -> None:
    assert group_label("planner.consent-view.1a2b3c4d") == "planner.consent-view"
    assert group_label("swapper-gpu") == "swapper-gpu"
    assert group_label("demo-view-1a2b3c4d") == "demo-view-1a2b3c4d"  # only a dotted suffix is an instance id
