"""Dead letters at the edges (docs/architecture.md "The bus"): a dead letter that would not fit the producer's
limit is cut to fit, a failure to dead-letter backs off and is visible, a header that is not UTF-8 cannot
make a message vanish, and a dead letter's job.failed names the record's job. Run against the in-process
bus and real Kafka; the Kafka-only tests replay an outside tester's exact reproductions."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reelfab.bus import Event, RawMessage
from reelfab.bus.memory import InMemoryBus
from reelfab.bus.policy import (
    DLQ_FAILURES_BEFORE_UNREADY,
    H_ATTEMPTS,
    H_DLQ_ESCAPED_HEADERS,
    H_DLQ_HEADERS_DROPPED,
    H_DLQ_KEY_LENGTH,
    H_DLQ_TRUNCATED,
    H_DLQ_VALUE_LENGTH,
    H_DLQ_VALUE_SHA256,
    H_ERROR_CLASS,
    H_ERROR_MESSAGE,
    H_FIRST_SEEN,
    H_GROUP,
    H_ORIGINAL_OFFSET,
    H_ORIGINAL_PARTITION,
    H_ORIGINAL_TOPIC,
    H_SERVICE,
    DeadLetter,
    fit_dead_letter,
)
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import JOB_FAILED, Topic
from reelfab.errors import MessageTooLargeError, ObjectRefused
from tests.conftest import eventually, make_settings, unique
from tests.contract.conftest import Harness, KafkaHarness, MemoryHarness
from tests.contract.records import swap_requested

SWAP = "reelfab.events.SwapRequested"
OUR_HEADERS = (H_ERROR_CLASS, H_ERROR_MESSAGE, H_SERVICE, H_GROUP, H_ATTEMPTS, H_FIRST_SEEN, H_ORIGINAL_TOPIC,
               H_ORIGINAL_PARTITION, H_ORIGINAL_OFFSET)


class Recorder:
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.events: list[Event[Any]] = []
        self.refuse = refuse or set()

    async def __call__(self, event: Event[Any]) -> None:
        if event.record.job_id in self.refuse:
            raise ObjectRefused(f"template of {event.record.job_id} is outside the store")
        self.events.append(event)

    def jobs(self) -> list[str]:
        return [e.record.job_id for e in self.events]


def text_headers(msg: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers}


async def send_raw(harness: Harness, topic: str, value: bytes, key: bytes | None,
                   headers: list[tuple[str, bytes | None]]) -> None:
    """A message as an outside producer writes it: on Kafka a plain aiokafka producer (binary and null
    header values, up to 4 MB requests), in memory straight onto the log."""
    if isinstance(harness, KafkaHarness):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=harness.settings.kafka_bootstrap, max_request_size=4_000_000)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()
    else:
        assert isinstance(harness, MemoryHarness)
        await harness.log.append(topic, value, key, [(k, v or b"") for k, v in headers])


async def dead_letters(harness: Harness, topic: Topic, n: int = 1) -> list[Any]:
    async def enough() -> bool:
        return len(await harness.messages(topic.dlq)) >= n

    await eventually(enough)
    return await harness.messages(topic.dlq)


async def announced_jobs(harness: Harness) -> list[str]:
    codec = default_codec()
    return [codec.decode(m.value, expected="reelfab.events.JobFailed").value["job_id"]
            for m in await harness.messages(JOB_FAILED)]


def dlq_failures(service: str, topic: str) -> float:
    return REGISTRY.get_sample_value("reelfab_dlq_failures_total", {"service": service, "topic": topic}) or 0.0


def too_large(harness: Harness, detail: str) -> Exception:
    """The transport's own size error: aiokafka's on Kafka."""
    if isinstance(harness, KafkaHarness):
        from aiokafka.errors import MessageSizeTooLargeError

        return MessageSizeTooLargeError(detail)
    return MessageTooLargeError(detail)


# --- a dead letter always fits ------------------------------------------------------------------------------


async def test_a_message_that_fits_but_whose_dead_letter_would_not_is_cut_to_fit(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    service = unique("swapper")
    bus = harness.bus(service)
    got = Recorder()
    bus.subscribe(topic, got, group="swappers")
    await bus.start()
    limit = bus.max_record_bytes
    # over the project's maximum (refused: MessageTooLargeError) but within the broker's, with one big header
    value = b"\xc3\x01" + b"A" * (harness.settings.max_message_bytes + 198)
    room = limit - bus.record_size(b"job-huge", value, [("x-big", b""), ("trace", b"t-1")]) - 200
    original = [("x-big", b"h" * room), ("trace", b"t-1")]
    assert bus.record_size(b"job-huge", value, original) <= limit  # the message itself fits
    await send_raw(harness, topic.name, value, b"job-huge", list(original))
    await bus.publish(topic, swap_requested("job-after-huge"))

    await eventually(lambda: got.jobs() == ["job-after-huge"])
    [dead] = await dead_letters(harness, topic)
    h = text_headers(dead)
    full = DeadLetter(RawMessage(topic.name, 0, 0, b"job-huge", value, original), MessageTooLargeError("x"), 1,
                      datetime.now(UTC))
    assert bus.record_size(b"job-huge", value, full.headers(service, "swappers")) > limit  # the full one would not
    assert h[H_DLQ_TRUNCATED] == "headers"
    assert h[H_DLQ_HEADERS_DROPPED].startswith("1 of 2 original headers")
    assert "x-big" not in h and h["trace"] == "t-1"  # the small original header is kept
    assert dead.value == value and dead.key == b"job-huge"  # the value fits once the header is gone
    assert h[H_ERROR_CLASS] == "reelfab.errors.MessageTooLargeError"
    assert all(name in h for name in OUR_HEADERS)
    assert (h[H_ORIGINAL_TOPIC], h[H_ORIGINAL_PARTITION], h[H_ORIGINAL_OFFSET]) == (topic.name, "0", "0")
    assert dlq_failures(service, topic.name) == 0  # fitted before sending: no failed attempt at all


async def test_a_value_too_big_for_its_dead_letter_is_cut_and_the_cut_is_said(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    service = unique("swapper")
    bus = harness.bus(service)
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    limit = bus.max_record_bytes
    # a value just under the broker's limit (over the project's maximum): our headers alone push its dead
    # letter over
    value = b"\xc3\x01" + b"B" * (limit - bus.record_size(b"job-fat", b"\xc3\x01", []) - 64)
    await bus.publish_raw(topic.name, value, key=b"job-fat", headers=[])
    await bus.publish(topic, swap_requested("job-after-fat"))

    await eventually(lambda: got.jobs() == ["job-after-fat"])
    [dead] = await dead_letters(harness, topic)
    h = text_headers(dead)
    assert h[H_DLQ_TRUNCATED] == "value"
    assert h[H_DLQ_VALUE_LENGTH] == str(len(value))
    assert h[H_DLQ_VALUE_SHA256] == hashlib.sha256(value).hexdigest()
    assert 0 < len(dead.value) < len(value) and value.startswith(dead.value)
    assert dead.key == b"job-fat"
    assert h[H_ERROR_CLASS] == "reelfab.errors.MessageTooLargeError"
    assert bus.record_size(dead.key, dead.value, list(dead.headers)) <= limit


async def test_a_dlq_topic_with_a_lower_limit_still_gets_its_dead_letter(harness: Harness) -> None:
    # the producer's estimate says it fits, the transport refuses the size anyway: cut harder, never loop
    topic = await harness.topic(partitions=1)
    service = unique("swapper")
    bus = harness.bus(service)
    dlq_limit = 20_000
    send = bus._send

    async def strict(t: str, value: bytes, key: bytes | None, headers: Any) -> Any:
        if t == topic.dlq and bus.record_size(key, value, headers) > dlq_limit:
            raise too_large(harness, f"record over the topic's {dlq_limit}")
        return await send(t, value, key, headers)

    bus._send = strict  # type: ignore[method-assign]
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    value = b"garbage" * 8000  # 56 KB, under the project's maximum: a decode failure
    await bus.publish_raw(topic.name, value, key=b"job-g", headers=[])
    await bus.publish(topic, swap_requested("job-after-g"))

    await eventually(lambda: got.jobs() == ["job-after-g"])
    [dead] = await dead_letters(harness, topic)
    h = text_headers(dead)
    assert h[H_DLQ_TRUNCATED] == "value" and h[H_DLQ_VALUE_LENGTH] == str(len(value))
    assert len(dead.value) < dlq_limit and h[H_ERROR_CLASS] == "reelfab.errors.DecodeError"
    assert dlq_failures(service, topic.name) == 0


@pytest.mark.parametrize("limit", [0, 300, 2_000, 10_000, 60_000, 70_000])
def test_fit_dead_letter_always_fits_keeping_our_headers(limit: int) -> None:
    bus = InMemoryBus(make_settings(), "svc", default_codec())
    raw = RawMessage("t", 0, 7, b"k" * 8_000, b"v" * 50_000, [("a", b"1" * 5_000), ("b", b"2")])
    letter = DeadLetter(raw, MessageTooLargeError("too big"), 1, datetime.now(UTC))
    record = fit_dead_letter(letter, "svc", "g", limit, bus.record_size)
    names = [k for k, _ in record.headers]
    assert all(name in names for name in OUR_HEADERS)  # ours are never cut
    if limit >= 2_000:  # anything that can hold our headers
        assert bus.record_size(record.key, record.value, record.headers) <= limit
    if limit >= bus.record_size(raw.key, raw.value, letter.headers("svc", "g")):
        assert record.truncated == () and record.value == raw.value
    else:
        assert record.truncated and dict(record.headers)[H_DLQ_TRUNCATED] == ",".join(record.truncated).encode()
    if "key" in record.truncated:
        assert dict(record.headers)[H_DLQ_KEY_LENGTH] == b"8000"


@pytest.mark.kafka
async def test_kafka_the_testers_message_no_longer_blocks_its_partition(stack: Any) -> None:
    """The exact reproduction: a 1,000,200-byte value and a ~65,000-byte header, under the broker's
    message.max.bytes, refused by a swapper with the default maximum; its full dead letter would be over
    the producer's limit. The next good message on the partition is processed; the dead letter says it
    was cut."""
    harness = KafkaHarness(stack)
    try:
        topic = await harness.topic(partitions=1)
        service = unique("swapper-gpu")
        bus = harness.bus(service, max_message_bytes=1_000_000)  # the default: what runs in production
        assert bus.settings.broker_max_message_bytes == 1_065_536
        got = Recorder()
        bus.subscribe(topic, got)
        await bus.start()
        value = b"\xc3\x01" + b"A" * 1_000_198
        header = ("x-big", b"h" * 65_000)
        await send_raw(harness, topic.name, value, b"job-repro", [header])
        planner = harness.bus("planner")
        await planner.start()
        await planner.publish(topic, swap_requested("job-after-repro"))

        await eventually(lambda: got.jobs() == ["job-after-repro"], timeout=30)
        [dead] = await dead_letters(harness, topic)
        h = text_headers(dead)
        assert h[H_ERROR_CLASS] == "reelfab.errors.MessageTooLargeError"
        assert "1000200 bytes exceeds the limit of 1000000" in h[H_ERROR_MESSAGE]
        assert h[H_DLQ_TRUNCATED] == "headers" and "x-big" not in h
        assert dead.value == value
        assert (h[H_ORIGINAL_TOPIC], h[H_ORIGINAL_PARTITION], h[H_ORIGINAL_OFFSET]) == (topic.name, "0", "0")
        assert dlq_failures(service, topic.name) == 0
        assert bus.policy.outages.ready
    finally:
        await harness.close()


# --- a failure to dead-letter backs off, counts and shows ---------------------------------------------------


async def test_a_failure_to_dead_letter_backs_off_counts_and_shows_then_the_partition_goes_on(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    service = unique("swapper")
    bus = harness.bus(service, outage_backoff_initial_s=0.02, outage_backoff_max_s=0.08)
    failing = 6
    tries: list[float] = []
    ready_seen: list[bool] = []
    send = bus._send

    async def dlq_down(t: str, value: bytes, key: bytes | None, headers: Any) -> Any:
        if t == topic.dlq:
            tries.append(time.monotonic())
            ready_seen.append(bus.policy.outages.ready)
            if len(tries) <= failing:
                raise RuntimeError("dead-letter topic unavailable (simulated)")
        return await send(t, value, key, headers)

    bus._send = dlq_down  # type: ignore[method-assign]
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    await bus.publish_raw(topic.name, b"garbage", key=b"job-stuck", headers=[])
    await bus.publish(topic, swap_requested("job-after-stuck"))

    await eventually(lambda: got.jobs() == ["job-after-stuck"])
    [dead] = await dead_letters(harness, topic)
    assert dead.key == b"job-stuck" and dead.value == b"garbage"
    assert len(tries) == failing + 1  # one write once it worked: no duplicate dead letter
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    expected = [min(0.08, 0.02 * 2 ** i) for i in range(failing)]
    assert all(gap >= want * 0.9 for gap, want in zip(gaps, expected, strict=True)), (gaps, expected)
    assert dlq_failures(service, topic.name) == failing
    # readiness said so once it persisted, and says ready again now that it is written
    assert ready_seen[:DLQ_FAILURES_BEFORE_UNREADY] == [True] * DLQ_FAILURES_BEFORE_UNREADY
    assert ready_seen[DLQ_FAILURES_BEFORE_UNREADY:failing] == [False] * (failing - DLQ_FAILURES_BEFORE_UNREADY)
    assert bus.policy.outages.ready


async def test_readiness_names_a_persisting_dead_letter_failure(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    service = unique("swapper")
    bus = harness.bus(service, outage_backoff_initial_s=0.01, outage_backoff_max_s=0.02)
    send = bus._send

    async def dlq_down(t: str, value: bytes, key: bytes | None, headers: Any) -> Any:
        if t == topic.dlq:
            raise RuntimeError("no route to the dead-letter topic (simulated)")
        return await send(t, value, key, headers)

    bus._send = dlq_down  # type: ignore[method-assign]
    bus.subscribe(topic, Recorder())
    await bus.start()
    await bus.publish_raw(topic.name, b"garbage", key=b"job-x", headers=[])
    await eventually(lambda: not bus.policy.outages.ready)
    [(dependency, error)] = bus.policy.outages.describe().items()
    assert dependency == f"dead-letter topic of {topic.name}" and "no route" in error
    assert dlq_failures(service, topic.name) >= DLQ_FAILURES_BEFORE_UNREADY
    before = dlq_failures(service, topic.name)
    await asyncio.sleep(0.2)
    assert dlq_failures(service, topic.name) - before <= 12  # backing off (capped at 20 ms here), not a tight loop
    bus._send = send  # type: ignore[method-assign]  # the topic is back: written, and ready again
    await dead_letters(harness, topic)
    await eventually(lambda: bus.policy.outages.ready)


# --- a header that is not UTF-8 ------------------------------------------------------------------------------


async def test_a_header_that_is_not_utf8_is_dead_lettered_not_dropped(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper")
    got = Recorder()
    bus.subscribe(topic, got)
    await bus.start()
    job = f"job-bin-{uuid.uuid4().hex[:6]}"
    value = default_codec().encode(SWAP, swap_requested(job))
    await send_raw(harness, topic.name, value, job.encode(), [("x", b"\xff")])  # the exact reproduction
    await bus.publish(topic, swap_requested("job-after-bin"))

    await eventually(lambda: got.jobs() == ["job-after-bin"])
    [dead] = await dead_letters(harness, topic)
    h = text_headers(dead)
    assert h[H_ERROR_CLASS] == "reelfab.errors.DecodeError"
    assert "header 'x' is not UTF-8" in h[H_ERROR_MESSAGE] and h[H_ATTEMPTS] == "1"
    assert h["x"] == "\\xff" and h[H_DLQ_ESCAPED_HEADERS] == "x"  # escaped, and said so
    assert dead.value == value and dead.key == job.encode()

    async def announced() -> bool:
        return job in await announced_jobs(harness)

    await eventually(announced)  # a job's dead letter still tells the planner


@pytest.mark.kafka
async def test_kafka_a_null_header_value_is_processed(stack: Any) -> None:
    # legal on Kafka, and it failed FastStream's parser just the same (None has no .decode())
    harness = KafkaHarness(stack)
    try:
        topic = await harness.topic(partitions=1)
        bus = harness.bus("swapper")
        got = Recorder()
        bus.subscribe(topic, got)
        await bus.start()
        value = default_codec().encode(SWAP, swap_requested("job-null-header"))
        await send_raw(harness, topic.name, value, b"job-null-header", [("x", None)])
        await eventually(lambda: got.jobs() == ["job-null-header"])
        assert got.events[0].headers == [("x", b"")]
        assert await harness.messages(topic.dlq) == []
    finally:
        await harness.close()


@pytest.mark.kafka
async def test_kafka_a_message_that_fails_before_the_policy_is_dead_lettered(stack: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # whatever FastStream fails on before the policy's scope, the message gets an outcome, never a skip
    from reelfab.bus import kafka

    real = kafka._tolerant_parser

    async def fragile(record: Any, original: Any) -> Any:
        if any(k == "boom" for k, _ in record.headers or ()):
            raise RuntimeError("parser exploded")
        return await real(record, original)

    monkeypatch.setattr(kafka, "_tolerant_parser", fragile)
    harness = KafkaHarness(stack)
    try:
        topic = await harness.topic(partitions=1)
        bus = harness.bus("swapper")
        got = Recorder()
        bus.subscribe(topic, got)
        await bus.start()
        value = default_codec().encode(SWAP, swap_requested("job-boom"))
        await send_raw(harness, topic.name, value, b"job-boom", [("boom", b"1")])
        await bus.publish(topic, swap_requested("job-after-boom"))
        await eventually(lambda: got.jobs() == ["job-after-boom"])
        [dead] = await dead_letters(harness, topic)
        h = text_headers(dead)
        assert h[H_ERROR_CLASS] == "reelfab.errors.DecodeError"
        assert "could not be read: RuntimeError: parser exploded" in h[H_ERROR_MESSAGE]
        assert dead.value == value
    finally:
        await harness.close()


# --- job.failed names the record's job ---------------------------------------------------------------------


async def test_job_failed_names_the_decoded_records_job_not_the_key(harness: Harness) -> None:
    topic = await harness.topic(partitions=1)
    bus = harness.bus("swapper-gpu")
    suffix = uuid.uuid4().hex[:8]
    job, key = f"outside-1-{suffix}", f"k-{suffix}"
    got = Recorder(refuse={job})
    bus.subscribe(topic, got)
    await bus.start()
    value = default_codec().encode(SWAP, swap_requested(job))
    await bus.publish_raw(topic.name, value, key=key.encode(), headers=[])
    # a record that decodes, keyed with something that is no identifier: the record's job is announced
    hostile_job = f"job-ok-{suffix}"
    got.refuse.add(hostile_job)
    await bus.publish_raw(topic.name, default_codec().encode(SWAP, swap_requested(hostile_job)),
                          key=b"../../etc", headers=[])
    await bus.publish(topic, swap_requested(f"job-after-{suffix}"))

    await eventually(lambda: got.jobs() == [f"job-after-{suffix}"])
    first, second = await dead_letters(harness, topic, 2)
    assert text_headers(first)[H_ERROR_CLASS] == "reelfab.errors.ObjectRefused"
    assert first.key == key.encode()  # the dead letter keeps the original key

    async def both_announced() -> bool:
        jobs = await announced_jobs(harness)
        return job in jobs and hostile_job in jobs

    await eventually(both_announced)
    jobs = await announced_jobs(harness)
    assert key not in jobs and "../../etc" not in jobs
    assert jobs.count(job) == 1
