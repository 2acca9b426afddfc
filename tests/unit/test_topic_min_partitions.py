"""`reelfab topics --create --min-partitions N` (the deployment's bootstrap Job in k8s/overlays/prod):
non-compacted catalogue topics get at least N partitions, existing ones are grown, compacted topics and
dead-letter topics keep their counts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner

from reelfab.bus import admin as bus_admin
from reelfab.bus.admin import default_topics, ensure_topics_async, growable, partitions_to_add
from reelfab.contracts.topics import TOPICS
from reelfab.settings import Settings

COMPACTED = {t.name for t in TOPICS if t.compacted}
PLAIN = {t.name: t.partitions for t in TOPICS if not t.compacted}


def test_min_partitions_raises_only_plain_catalogue_topics() -> None:
    specs = {name: partitions for name, partitions, _ in default_topics(12)}
    assert COMPACTED and PLAIN
    for t in TOPICS:
        assert specs[t.name] == (t.partitions if t.compacted else max(t.partitions, 12))
        assert specs[t.dlq] == 1
    assert default_topics() == default_topics(0)
    assert {n: p for n, p, _ in default_topics(1)} == {n: p for n, p, _ in default_topics()}


def test_compacted_and_dead_letter_topics_are_never_grown() -> None:
    grow = growable(default_topics(12))
    assert grow == set(PLAIN)
    assert not grow & COMPACTED
    assert not any(name.endswith(".dlq") for name in grow)


def test_partitions_to_add_only_grows() -> None:
    name = next(iter(PLAIN))
    specs: list[tuple[str, int, dict[str, str]]] = [(name, 12, {}), ("other", 12, {})]
    assert partitions_to_add(specs, {name: 6}, {name}) == {name: 12}
    assert partitions_to_add(specs, {name: 20}, {name}) == {}  # never shrinks (Kafka cannot)
    assert partitions_to_add(specs, {name: 6}, set()) == {}  # not growable
    assert partitions_to_add(specs, {}, {name}) == {}  # missing: created, not grown


class FakeAdmin:
    """The part of AIOKafkaAdminClient that ensure_topics_async uses."""

    instances: list[FakeAdmin] = []

    def __init__(self, **_: Any) -> None:
        self.topics = {name: partitions for name, partitions, _ in default_topics()}
        self.grown: dict[str, int] = {}
        self.created: list[Any] = []
        FakeAdmin.instances.append(self)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def describe_topics(self) -> list[dict[str, Any]]:
        return [{"topic": n, "partitions": [{} for _ in range(p)]} for n, p in self.topics.items()]

    async def create_partitions(self, wanted: dict[str, Any]) -> None:
        self.grown.update({name: new.total_count for name, new in wanted.items()})

    async def create_topics(self, new: list[Any], timeout_ms: int) -> Any:
        self.created.extend(new)
        raise AssertionError("nothing is missing")


def test_existing_topics_are_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka.admin

    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", FakeAdmin)
    said: list[str] = []
    created = asyncio.run(ensure_topics_async(Settings(), say=said.append, min_partitions=12))
    fake = FakeAdmin.instances[-1]
    assert created == []
    assert fake.grown == {name: max(p, 12) for name, p in PLAIN.items() if p < 12}
    assert any("grown from" in line for line in said)

    said.clear()
    asyncio.run(ensure_topics_async(Settings(), say=said.append))  # without the flag: only reported
    assert FakeAdmin.instances[-1].grown == {}


def test_cli_passes_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from reelfab import cli

    seen: dict[str, Any] = {}

    def fake_ensure(settings: Settings, say: Any = print, min_partitions: int = 0) -> list[str]:
        seen["min_partitions"] = min_partitions
        return []

    async def described(_bootstrap: str) -> dict[str, tuple[int, str]]:
        return {t.name: (t.partitions, "delete") for t in TOPICS}

    monkeypatch.setattr(bus_admin, "ensure_topics", fake_ensure)
    monkeypatch.setattr(cli, "_describe_topics", described)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["topics", "--create", "--min-partitions", "12"])
    assert result.exit_code == 0, result.output
    assert seen == {"min_partitions": 12}
    assert runner.invoke(cli.app, ["topics", "--min-partitions", "12"]).exit_code == 2
    assert runner.invoke(cli.app, ["topics", "--create", "--min-partitions", "-1"]).exit_code == 2
