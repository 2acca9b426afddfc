"""The bus contract (docs/architecture.md "Delivery rules"), run against the in-process bus and real Kafka."""

from __future__ import annotations

import asyncio
import struct
from datetime import datetime
from typing import Any

from reelfab.bus import Event
from reelfab.bus.policy import (
    H_ATTEMPTS,
    H_ERROR_CLASS,
    H_ERROR_MESSAGE,
    H_FIRST_SEEN,
    H_GROUP,
    H_ORIGINAL_OFFSET,
    H_ORIGINAL_TOPIC,
    H_SERVICE,
)
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import model_for
from reelfab.errors import TransientError
from tests.conftest import eventually
from tests.contract.conftest import Harness
from tests.contract.records import swap_requested

SWAP = "reelfab.events.SwapRequested"


class Recorder:
    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.events: list[Event[Any]] = []
        self.fail = fail or {}  # job_id -> how many attempts fail with a transient error

    async def __call__(self, event: Event[Any]) -> None:
        job = event.record.job_id
        if self.fail.get(job, 0) >= event.attempt:
            raise TransientError(f"database busy for {job} (attempt {event.attempt})")
        self.events.append(event)

    def jobs(self) -> list[str]:
        return [e.record.job_id for e in self.events]


def headers(msg: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers}


async def test_typed_round_trip_through_a_topic(harness: Harness) -> None:
    topic = await harness.topic()
    consumer, producer = harness.bus("swapper"), harness.bus("planner")
    got = Recorder()
    consumer.subscribe(topic, got)
    await consumer.start()
    await producer.start()
    sent = swap_requested()
    published = await producer.publish(topic, model_for(SWAP)(**sent))
    await eventually(lambda: len(got.events) == 1)
    event = got.events[0]
    assert type(event.record).__avro_name__ == SWAP
    assert event.record.to_avro() | {} == model_for(SWAP)(**sent).to_avro()
    assert event.record.occurred_at == sent["occurred_at"]
    assert event.key == sent["job_id"]  # keyed as the catalogue says
    assert (event.partition, event.offset) == (published.partition, published.offset)
    assert event.attempt == 1


async def test_a_keys_events_stay_in_one_partition_in_order(harness: Harness) -> None:
    topic = await harness.topic(partitions=3)
    producer = harness.bus("planner")
    await producer.start()
    landed = [await producer.publish(topic, swap_requested("job-same", consent_version=i)) for i in range(6)]
    assert len({p.partition for p in landed}) == 1
    assert [p.offset for p in landed] == sorted(p.offset for p in landed)


async def test_consumer_group_resumes_from_committed_offsets(harness: Harness) -> None:
    topic = await harness.topic(partitions=2)
    producer = harness.bus("planner")
    await producer.start()
    first = [f"job-a{i}" for i in range(4)]
    for job in first:
        await producer.publish(topic, swap_requested(job))
    one = Recorder()
    bus1 = harness.bus("swapper")
    bus1.subscribe(topic, one, group="swappers")
    await bus1.start()
    await eventually(lambda: sorted(one.jobs()) == sorted(first))
    await bus1.stop()

    later = [f"job-b{i}" for i in range(3)]
    for job in later:
        await producer.publish(topic, swap_requested(job))
    two = Recorder()
    bus2 = harness.bus("swapper")
    bus2.subscribe(topic, two, group="swappers")
    await bus2.start()
    await eventually(lambda: sorted(two.jobs()) == sorted(later))
    await asyncio.sleep(0.3)
    assert sorted(two.jobs()) == sorted(later), "a committed message was delivered again"

    # another group is independent and reads everything
    three = Recorder()
    bus3 = harness.bus("analytics")
    bus3.subscribe(topic, three, group="others")
    await bus3.start()
    await eventually(lambda: sorted(three.jobs()) == sorted(first + later))


async def test_transient_failure_is_redelivered_then_succeeds(harness: Harness) -> None:
    topic = await harness.topic()
    bus = harness.bus("swapper")
    got = Recorder(fail={"job-flaky": 2})
    bus.subscribe(topic, got)
    await bus.start()
    await bus.publish(topic, swap_requested("job-flaky"))
    await bus.publish(topic, swap_requested("job-fine"))
    await eventually(lambda: sorted(got.jobs()) == ["job-fine", "job-flaky"])
    flaky = next(e for e in got.events if e.record.job_id == "job-flaky")
    assert flaky.attempt == 3  # failed twice, handled on the third delivery
    assert await harness.messages(topic.dlq) == []


async def test_exhausted_retries_go_to_the_dlq_and_the_consumer_goes_on(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder(fail={"job-doomed": 99})
    bus.subscribe(topic, got)
    await bus.start()
    await bus.publish(topic, swap_requested("job-doomed"))
    await bus.publish(topic, swap_requested("job-next"))
    await eventually(lambda: got.jobs() == ["job-next"])
    await eventually(lambda: _count(harness, topic.dlq, 1))
    [dead] = await harness.messages(topic.dlq)
    h = headers(dead)
    assert h[H_ERROR_CLASS] == "reelfab.errors.TransientError"
    assert "database busy for job-doomed (attempt 3)" in h[H_ERROR_MESSAGE]
    assert h[H_ATTEMPTS] == "3"
    assert h[H_SERVICE] == "swapper"
    assert dead.key == b"job-doomed"
    decoded = default_codec().decode(dead.value, expected=SWAP)  # the original bytes, untouched
    assert decoded.value["job_id"] == "job-doomed"


async def test_poison_bytes_are_dead_lettered_with_headers_and_the_next_message_is_processed(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder()
    bus.subscribe(topic, got, group="swappers")
    await bus.start()
    before = datetime.now().astimezone()
    poison = b'{"job_id": "not avro"}'
    await bus.publish_raw(topic.name, poison, key=b"job-poison", headers=[("trace", b"t-1")])
    await bus.publish(topic, swap_requested("job-good"))
    await eventually(lambda: got.jobs() == ["job-good"])
    await eventually(lambda: _count(harness, topic.dlq, 1))
    [dead] = await harness.messages(topic.dlq)
    assert dead.value == poison and dead.key == b"job-poison"
    h = headers(dead)
    assert h[H_ERROR_CLASS] == "reelfab.errors.DecodeError"
    assert "single-object" in h[H_ERROR_MESSAGE]
    assert h[H_ATTEMPTS] == "1"  # permanent: not retried
    assert h[H_SERVICE] == "swapper" and h[H_GROUP] == "swappers"
    assert h[H_ORIGINAL_TOPIC] == topic.name and h[H_ORIGINAL_OFFSET] == "0"
    assert datetime.fromisoformat(h[H_FIRST_SEEN]) >= before.replace(microsecond=0)
    assert h["trace"] == "t-1"  # the original headers travel along


async def test_a_record_of_the_wrong_schema_is_dead_lettered_naming_both(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    wrong = default_codec().encode(
        "reelfab.events.JobFailed",
        {"event_id": "e1", "occurred_at": datetime.now().astimezone(), "producer": "x", "job_id": "job-w",
         "stage": "post", "reason_code": "x", "reason": "x", "retryable": False},
    )
    await bus.publish_raw(topic.name, wrong, key=b"job-w", headers=[])
    await bus.publish(topic, swap_requested("job-after"))
    await eventually(lambda: got.jobs() == ["job-after"])
    await eventually(lambda: _count(harness, topic.dlq, 1))
    [dead] = await harness.messages(topic.dlq)
    h = headers(dead)
    assert h[H_ERROR_CLASS] == "reelfab.errors.SchemaMismatchError"
    assert "SwapRequested" in h[H_ERROR_MESSAGE] and "JobFailed" in h[H_ERROR_MESSAGE]


async def test_a_record_from_an_unknown_schema_is_dead_lettered(harness: Harness) -> None:
    # what a producer with a schema missing a required field would write: a fingerprint we never issued
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    foreign = b"\xc3\x01" + struct.pack("<Q", 0x1234_5678_9ABC_DEF0) + b"\x02\x06abc"
    await bus.publish_raw(topic.name, foreign, key=b"job-f", headers=[])
    await bus.publish(topic, swap_requested("job-after"))
    await eventually(lambda: got.jobs() == ["job-after"])
    await eventually(lambda: _count(harness, topic.dlq, 1))
    [dead] = await harness.messages(topic.dlq)
    assert "fingerprint" in headers(dead)[H_ERROR_MESSAGE]


async def test_an_oversized_message_is_dead_lettered_naming_its_size(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    big = b"\xc3\x01" + b"\x00" * (harness.settings.max_message_bytes + 10)
    await bus.publish_raw(topic.name, big, key=b"job-big", headers=[])
    await bus.publish(topic, swap_requested("job-small"))
    await eventually(lambda: got.jobs() == ["job-small"])
    await eventually(lambda: _count(harness, topic.dlq, 1))
    [dead] = await harness.messages(topic.dlq)
    h = headers(dead)
    assert h[H_ERROR_CLASS] == "reelfab.errors.MessageTooLargeError"
    assert f"{len(big)} bytes exceeds the limit of {harness.settings.max_message_bytes}" in h[H_ERROR_MESSAGE]


async def test_a_dead_lettered_job_is_announced_on_job_failed(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper-gpu")
    bus.subscribe(topic, Recorder())
    await bus.start()
    await bus.publish_raw(topic.name, b"garbage", key=b"job-announced", headers=[])
    await eventually(lambda: _count(harness, topic.dlq, 1))

    async def announced() -> bool:
        for m in await harness.messages("reelfab.job.failed.v1"):
            if m.key == b"job-announced":
                value = default_codec().decode(m.value, expected="reelfab.events.JobFailed").value
                return value["stage"] == "swapper-gpu" and value["retryable"] is False and "DecodeError" in value["reason"]
        return False

    await eventually(announced)


async def _count(harness: Harness, topic: str, n: int) -> bool:
    return len(await harness.messages(topic)) >= n


async def test_a_record_with_a_hostile_identifier_is_dead_lettered_naming_the_field(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper-gpu")
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    hostile = default_codec().encode(SWAP, swap_requested("job-ok", template_id="../../etc"))
    await bus.publish_raw(topic.name, hostile, key=b"job-ok", headers=[])
    await bus.publish_raw(topic.name, default_codec().encode(SWAP, swap_requested("/tmp/x")), key=b"/tmp/x", headers=[])
    await bus.publish(topic, swap_requested("job-after"))
    await eventually(lambda: got.jobs() == ["job-after"])
    await eventually(lambda: _count(harness, topic.dlq, 2))
    first, second = await harness.messages(topic.dlq)
    assert "template_id" in headers(first)[H_ERROR_MESSAGE] and headers(first)[H_ATTEMPTS] == "1"
    assert "job_id" in headers(second)[H_ERROR_MESSAGE]

    async def failures() -> list[bytes | None]:
        return [m.key for m in await harness.messages("reelfab.job.failed.v1") if m.key in (b"job-ok", b"/tmp/x")]

    await eventually(lambda: _has(failures, b"job-ok"))
    assert b"/tmp/x" not in await failures()  # a hostile key is never re-announced as a job id


async def _has(source: Any, key: bytes) -> bool:
    return key in await source()
