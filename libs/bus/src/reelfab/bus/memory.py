"""The in-process bus: the same contract as Kafka (partitioned logs, consumer groups with
committed offsets, redelivery of what was not committed, DLQ) inside one asyncio loop. Used by
the embedded mode (`make demo`) and by unit tests; the contract suite runs against both."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from datetime import datetime
from typing import Any

from reelfab.contracts.codec import AvroCodec
from reelfab.contracts.topics import BY_NAME
from reelfab.errors import MessageTooLargeError
from reelfab.settings import Settings

from .base import Bus, Subscription
from .message import Headers, Published, RawMessage


class MemoryLog:
    """The broker: shared by every bus instance built on it, like a Kafka cluster is."""

    def __init__(self, default_partitions: int = 3) -> None:
        self.partitions: dict[str, list[list[RawMessage]]] = {}
        self.committed: dict[tuple[str, str, int], int] = defaultdict(int)  # (group, topic, partition)
        self.members: dict[tuple[str, str], list[_Consumer]] = defaultdict(list)
        self.default_partitions = default_partitions
        self.changed = asyncio.Condition()

    def create_topic(self, name: str, partitions: int) -> None:
        self.partitions.setdefault(name, [[] for _ in range(partitions)])

    def log_for(self, topic: str) -> list[list[RawMessage]]:
        if topic not in self.partitions:
            known = BY_NAME.get(topic.removesuffix(".dlq"))
            n = 1 if topic.endswith(".dlq") else (known.partitions if known else self.default_partitions)
            self.create_topic(topic, n)
        return self.partitions[topic]

    async def append(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> Published:
        parts = self.log_for(topic)
        # stable key -> partition mapping, so a key's events stay ordered as on Kafka
        p = zlib.crc32(key) % len(parts) if key else sum(len(x) for x in parts) % len(parts)
        offset = len(parts[p])
        parts[p].append(RawMessage(topic, p, offset, key, value, list(headers), int(time.time() * 1000)))
        async with self.changed:
            self.changed.notify_all()
        return Published(topic, p, offset)

    def assignment(self, consumer: _Consumer) -> list[int]:
        """Round-robin partitions over the group's live members (a rebalance is a recompute)."""
        members = self.members[(consumer.sub.group, consumer.sub.topic.name)]
        n = len(self.log_for(consumer.sub.topic.name))
        idx = members.index(consumer)
        return [p for p in range(n) if p % len(members) == idx]


class _Consumer:
    def __init__(self, bus: InMemoryBus, sub: Subscription) -> None:
        self.bus = bus
        self.sub = sub
        self.positions: dict[int, int] = {}
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        log = self.bus.log
        topic = self.sub.topic.name
        while True:
            progressed = False
            for p in log.assignment(self):
                key = (self.sub.group, topic, p)
                pos = self.positions.setdefault(p, log.committed[key])
                messages = log.log_for(topic)[p]
                if pos < len(messages):
                    raw = messages[pos]
                    try:
                        await self.bus.process(self.sub, raw)
                    except Exception:
                        # dead-lettering failed: rewind to the committed offset and try again later
                        self.positions[p] = log.committed[key]
                        await asyncio.sleep(self.bus.settings.retry_backoff_initial_s)
                        continue
                    self.positions[p] = pos + 1
                    log.committed[key] = pos + 1
                    progressed = True
            if not progressed:
                async with log.changed:
                    try:
                        await asyncio.wait_for(log.changed.wait(), timeout=0.5)
                    except TimeoutError:
                        pass


class InMemoryBus(Bus):
    def __init__(self, settings: Settings, service: str, codec: AvroCodec, log: MemoryLog | None = None) -> None:
        super().__init__(settings, service, codec)
        self.log = log or MemoryLog()
        self.consumers: list[_Consumer] = []

    async def _send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> Published:
        size = self.record_size(key, value, headers)
        if size > self.max_record_bytes:  # the limit Kafka's producer (max_request_size) and broker enforce
            raise MessageTooLargeError(
                f"a record of {size} bytes for {topic} is over the producer's limit of {self.max_record_bytes}"
            )
        return await self.log.append(topic, value, key, headers)

    async def process(self, sub: Subscription, raw: RawMessage) -> str:
        decoded: list[Any] = []

        async def attempt(n: int) -> Any:
            event = self.decode(sub, raw, n)
            decoded.append(event.record)
            return await sub.handler(event)

        return await self.policy.deliver(raw, attempt, self.dead_letter_sink(sub, decoded))

    async def _start(self) -> None:
        for sub in self.subscriptions:
            consumer = _Consumer(self, sub)
            if not sub.from_beginning:
                for p, msgs in enumerate(self.log.log_for(sub.topic.name)):
                    self.log.committed.setdefault((sub.group, sub.topic.name, p), len(msgs))
            self.log.members[(sub.group, sub.topic.name)].append(consumer)
            self.consumers.append(consumer)
        for consumer in self.consumers:
            consumer.task = asyncio.create_task(consumer.run(), name=f"consume:{consumer.sub.topic.name}")

    async def _stop(self) -> None:
        # like a process that dies: what was not committed is redelivered to the next member
        for consumer in self.consumers:
            if consumer.task:
                consumer.task.cancel()
        for consumer in self.consumers:
            if consumer.task:
                try:
                    await consumer.task
                except (asyncio.CancelledError, Exception):
                    pass
            self.log.members[(consumer.sub.group, consumer.sub.topic.name)].remove(consumer)
        self.consumers.clear()

    async def scan(self, topic: str, since: datetime) -> list[RawMessage]:
        cutoff = int(since.timestamp() * 1000)
        return [m for part in self.log.log_for(topic) for m in part if (m.timestamp_ms or 0) >= cutoff]

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every consumer has caught up with its partitions (tests and the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                c.positions.get(p, self.log.committed[(c.sub.group, c.sub.topic.name, p)])
                >= len(self.log.log_for(c.sub.topic.name)[p])
                for c in self.consumers
                for p in self.log.assignment(c)
            ):
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("in-process bus did not drain")
