"""The local stack against the real Kafka and PostgreSQL: the shared stack is started (idempotently) and
never stopped here; stop/start and failure cases run on throwaway state dirs and ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelfab.contracts.topics import TOPICS
from reelfab.devtools.localstack import (
    broker_max_message_bytes,
    default_topics,
    down,
    ensure_topics,
    kafka_status,
    postgres_status,
    start_kafka,
    start_postgres,
    stop_kafka,
    stop_postgres,
    up,
)
from reelfab.errors import StackError
from reelfab.settings import Settings, get_settings


def _quiet(_: str) -> None:
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def infra() -> Settings:
    """The stack as `reelfab up` starts it (named apart from conftest's client-side `settings`)."""
    return get_settings()


@pytest.fixture(scope="module")
def kafka_up(infra: Settings, stack: Settings) -> Settings:
    # conftest's `stack` starts both (and stops them after the session if it started them)
    return infra


@pytest.fixture(scope="module")
def postgres_up(infra: Settings, stack: Settings) -> Settings:
    return infra


@pytest.fixture
def scratch(infra: Settings) -> Iterator[Path]:
    # under the real state dir, not pytest's tmp: the postgres account must be able to traverse to it
    path = Path(infra.state_dir).resolve() / f"test-localstack-{os.getpid()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a process that is not ours (this test process)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


async def _describe(bootstrap: str) -> tuple[dict[str, int], dict[str, str]]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        names = [t.name for t in TOPICS] + [t.dlq for t in TOPICS]
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None}) for n in names]
        policy: dict[str, str] = {}
        for response in await admin.describe_configs(resources):
            for _code, _msg, _type, name, entries in response.resources:
                policy[name] = next(e[1] for e in entries if e[0] == "cleanup.policy")
        return partitions, policy
    finally:
        await admin.close()


@pytest.mark.kafka
def test_topics_exist_with_partitions_and_compaction(kafka_up: Settings) -> None:
    partitions, policy = asyncio.run(_describe(kafka_up.kafka_bootstrap))
    for t in TOPICS:
        assert partitions.get(t.name) == t.partitions, t.name
        assert policy[t.name] == ("compact" if t.compacted else "delete"), t.name
        assert partitions.get(t.dlq) == 1, t.dlq
        assert policy[t.dlq] == "delete", t.dlq
    assert len(default_topics()) == 2 * len(TOPICS)
    assert ensure_topics(kafka_up, say=_quiet) == []  # idempotent


@pytest.mark.kafka
def test_broker_takes_the_largest_message_plus_dlq_headers(kafka_up: Settings) -> None:
    from aiokafka import AIOKafkaProducer

    name = "reelfab.devtools.localstack.test.v1"  # a topic of its own: other tests read the catalogue's
    assert ensure_topics(kafka_up, [(name, 1, {})], say=_quiet) in ([name], [])

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_up.kafka_bootstrap, max_request_size=broker_max_message_bytes(kafka_up)
        )
        await producer.start()
        try:
            headers = [("reason", b"r" * 4096), ("stage", b"swap"), ("attempts", b"5")]
            value = b"v" * kafka_up.max_message_bytes
            await producer.send_and_wait(name, value, key=b"job-1", headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.mark.kafka
@pytest.mark.postgres
def test_second_up_is_harmless_and_fast(kafka_up: Settings, postgres_up: Settings) -> None:
    lines: list[str] = []
    before = kafka_status(kafka_up)["pid"], postgres_status(kafka_up)["pid"]
    started = time.monotonic()
    up(kafka_up, say=lines.append)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, lines
    assert any("kafka: already running" in line for line in lines), lines
    assert any("postgres: already running" in line for line in lines), lines
    assert (kafka_status(kafka_up)["pid"], postgres_status(kafka_up)["pid"]) == before


@pytest.mark.kafka
@pytest.mark.postgres
def test_status_reports_pids(kafka_up: Settings, postgres_up: Settings) -> None:
    for status in (kafka_status(kafka_up), postgres_status(postgres_up)):
        assert status["running"] is True, status
        assert isinstance(status["pid"], int) and Path(f"/proc/{status['pid']}").exists(), status
        assert status["port_open"] and not status["foreign"], status


@pytest.mark.postgres
def test_postgres_answers_select_1(postgres_up: Settings) -> None:
    import asyncpg

    async def one() -> int:
        conn = await asyncpg.connect(postgres_up.postgres_dsn)
        try:
            return int(await conn.fetchval("select 1"))
        finally:
            await conn.close()

    assert asyncio.run(one()) == 1


def test_foreign_port_gives_clear_error(infra: Settings, scratch: Path, listener: int) -> None:
    kafka = infra.model_copy(update={"state_dir": scratch, "kafka_bootstrap": f"127.0.0.1:{listener}"})
    with pytest.raises(StackError, match=rf"port 127\.0\.0\.1:{listener} .*not Reelfab's Kafka"):
        start_kafka(kafka, say=_quiet)
    pg = infra.model_copy(update={"state_dir": scratch, "postgres_port": listener})
    with pytest.raises(StackError, match=rf"port 127\.0\.0\.1:{listener} .*not Reelfab's PostgreSQL") as info:
        start_postgres(pg, say=_quiet)
    assert f"pid {os.getpid()}" in str(info.value)  # names who holds it
    assert kafka_status(kafka)["foreign"] and postgres_status(pg)["foreign"]


def test_down_without_a_stack_and_stale_pid_files_are_harmless(infra: Settings, scratch: Path) -> None:
    other = infra.model_copy(
        update={
            "state_dir": scratch,
            "kafka_bootstrap": f"127.0.0.1:{_free_port()}",
            "postgres_port": _free_port(),
        }
    )
    assert down(other, say=_quiet) == ["kafka: not running", "postgres: not running"]
    pid_file = scratch / "kafka" / "kafka.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")  # alive but not ours: must not be signalled
    assert kafka_status(other)["pid"] is None
    assert stop_kafka(other, say=_quiet) == "kafka: not running"
    assert not pid_file.exists()


@pytest.mark.postgres
def test_postgres_stop_start_on_its_own_state_dir(infra: Settings, scratch: Path) -> None:
    other = infra.model_copy(update={"state_dir": scratch, "postgres_port": _free_port()})
    try:
        assert "running (pid" in start_postgres(other, say=_quiet)
        assert "already running" in start_postgres(other, say=_quiet)
        pid = postgres_status(other)["pid"]
        assert "stopped pid" in stop_postgres(other, say=_quiet)
        assert stop_postgres(other, say=_quiet) == "postgres: not running"
        status = postgres_status(other)
        assert isinstance(pid, int) and not status["running"] and not status["port_open"], status
    finally:
        stop_postgres(other, say=_quiet)
