"""A demo on a shared stack: it consumes only what it produces (what an earlier, aborted run or a
hand-run producer left on a work topic is skipped for the demo's groups, and the user's own groups keep
it), and a second demo on the same stack is refused before it touches anything."""

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


@pytest.mark.postgres
async def test_a_second_demo_on_the_stack_is_refused_naming_the_first(stack: Any, tmp_path: Any) -> None:
    from reelfab.devtools.demo import DemoRefused
    from reelfab.devtools.demo.lock import one_demo_at_a_time, owner_note

    settings: Settings = stack.model_copy(update={"state_dir": tmp_path / "state"})
    async with one_demo_at_a_time(settings, tmp_path / "first-out"):
        with pytest.raises(DemoRefused, match=r"another demo is running on this stack \(pid \d+, writing to .*first-out"):
            async with one_demo_at_a_time(settings, tmp_path / "second-out"):
                pytest.fail("two demos held the stack at once")
    assert not owner_note(settings).exists()
    async with one_demo_at_a_time(settings, tmp_path / "second-out"):  # free again once the first is done
        pass
