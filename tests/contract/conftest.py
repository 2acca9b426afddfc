"""The bus contract suite runs once per adapter: the in-process bus and real Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from reelfab.bus import Bus, RawMessage
from reelfab.bus.kafka import KafkaBus
from reelfab.bus.memory import InMemoryBus, MemoryLog
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import SCHEMA_NAMESPACE, Topic
from reelfab.settings import Settings
from tests.conftest import make_settings, unique

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class Harness:
    kind = "?"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buses: list[Bus] = []

    def bus(self, service: str = "svc", **overrides: Any) -> Bus:
        settings = make_settings(**{**self.settings.model_dump(), **overrides}) if overrides else self.settings
        bus = self._new_bus(settings, service)
        self.buses.append(bus)
        return bus

    async def topic(self, record: str = "SwapRequested", partitions: int = 3, key_field: str = "job_id") -> Topic:
        t = Topic(unique(f"test.{record.lower()}"), f"{SCHEMA_NAMESPACE}.{record}", key_field, partitions)
        await self._create(t)
        return t

    async def messages(self, topic: str) -> list[RawMessage]:
        reader = self.buses[0] if self.buses else self.bus("reader")
        return sorted(await reader.scan(topic, EPOCH), key=lambda m: (m.partition, m.offset))

    async def close(self) -> None:
        for bus in self.buses:
            if bus.started:
                await bus.stop()

    def _new_bus(self, settings: Settings, service: str) -> Bus:
        raise NotImplementedError

    async def _create(self, topic: Topic) -> None:
        raise NotImplementedError


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.log = MemoryLog()

    def _new_bus(self, settings: Settings, service: str) -> Bus:
        return InMemoryBus(settings, service, default_codec(), log=self.log)

    async def _create(self, topic: Topic) -> None:
        self.log.create_topic(topic.name, topic.partitions)
        self.log.create_topic(topic.dlq, 1)


class KafkaHarness(Harness):
    kind = "kafka"

    def _new_bus(self, settings: Settings, service: str) -> Bus:
        return KafkaBus(settings, service, default_codec())

    async def _create(self, topic: Topic) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic.name, topic.partitions, 1), NewTopic(topic.dlq, 1, 1)]
            )
        finally:
            await admin.close()


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Harness]:
    if request.param == "kafka":
        stack = request.getfixturevalue("stack")
        h: Harness = KafkaHarness(stack)
    else:
        h = MemoryHarness(settings)
    yield h
    await h.close()
