"""A demo run consumes only what it produces: what an earlier (aborted) run or a hand-run producer
left on a work topic is skipped for the demo's groups, and the user's own groups keep it."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from reelfab.contracts.topics import SWAP_REQUESTED
from reelfab.devtools.demo.factory import skip_earlier_work
from reelfab.settings import Settings

pytestmark = [pytest.mark.kafka]


async def committed(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def test_earlier_work_is_skipped_for_the_demo_groups_only(stack: Any) -> None:
    settings: Settings = stack
    await skip_earlier_work(settings, ("swapper-gpu",))  # whatever earlier tests left
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(SWAP_REQUESTED, f"left by an aborted run {n}".encode())
    finally:
        await producer.stop()
    user_group_before = await committed(settings, "swapper-gpu", SWAP_REQUESTED)

    assert await skip_earlier_work(settings, ("swapper-gpu",)) == 3
    assert await skip_earlier_work(settings, ("swapper-gpu",)) == 0  # nothing new since

    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        tps = [TopicPartition(SWAP_REQUESTED, p) for p in sorted(await committed(settings, "demo-swapper-gpu",
                                                                                   SWAP_REQUESTED))]
        ends = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    demo = await committed(settings, "demo-swapper-gpu", SWAP_REQUESTED)
    assert demo == {tp.partition: ends[tp] for tp in tps}  # the demo's group starts at the end
    assert await committed(settings, "swapper-gpu", SWAP_REQUESTED) == user_group_before  # not the user's
