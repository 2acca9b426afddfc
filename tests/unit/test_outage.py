"""A dependency's outage is nobody's message's fault: it is waited out, never dead-lettered
(docs/architecture.md "Delivery rules"), while readiness is false and a gauge says what is awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from reelfab.bus.message import RawMessage
from reelfab.bus.outage import Outages, outage_of
from reelfab.bus.policy import DeadLetter, DeliveryPolicy, RetryPolicy, is_permanent
from reelfab.errors import (
    DependencyUnavailable,
    PermanentError,
    StoreUnavailable,
    TransientError,
)

FAST = RetryPolicy(max_attempts=3, backoff_initial_s=0.001, backoff_max_s=0.002,
                   outage_backoff_initial_s=0.001, outage_backoff_max_s=0.005)


def raw(offset: int = 0) -> RawMessage:
    return RawMessage(topic="reelfab.swap.requested.v1", partition=0, offset=offset, key=b"job-1", value=b"x",
                      headers=[], timestamp_ms=0)


class Flaky:
    """Fails with the given errors in turn, then succeeds; records the attempt numbers it was given."""

    def __init__(self, *errors: BaseException, outages: Outages | None = None) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []
        self.ready_seen: list[bool] = []
        self.outages = outages

    async def __call__(self, n: int) -> None:
        self.attempts.append(n)
        if self.outages is not None:
            self.ready_seen.append(self.outages.ready)
        if self.errors:
            raise self.errors.pop(0)


async def deliver(policy: DeliveryPolicy, attempt: Any) -> tuple[str, list[DeadLetter]]:
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    return await policy.deliver(raw(), attempt, sink), letters


async def _refused_by_asyncpg() -> None:
    # a real connection attempt to a closed port: the error asyncpg raises while PostgreSQL restarts
    await asyncpg.connect(host="127.0.0.1", port=_closed_port(), user="x", database="x", timeout=2)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_postgresql_outage_longer_than_the_retry_budget_dead_letters_nothing() -> None:
    try:
        await _refused_by_asyncpg()
    except OSError as exc:
        refused = exc
    policy = DeliveryPolicy("svc-pg", FAST, 1 << 20, Outages("svc-pg"))
    errors = [refused, asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
              asyncpg.CannotConnectNowError("the database system is starting up")] * 4
    flaky = Flaky(*errors, outages=policy.outages)
    outcome, letters = await deliver(policy, flaky)
    assert outcome == "retried" and letters == []
    assert len(flaky.attempts) == len(errors) + 1 > FAST.max_attempts
    assert set(flaky.attempts) == {1}  # an outage spends none of the message's attempts
    assert flaky.ready_seen[0] and not any(flaky.ready_seen[1:])  # not ready while waiting
    assert policy.outages.ready  # and ready again once it answered


@pytest.mark.parametrize("error", [
    DependencyUnavailable("consent registry", "connection refused"),
    StoreUnavailable("the store's root /mnt/store is not there"),
    httpx.ConnectError("connection refused"),
    TransientError("wrapped"),  # its cause says what was down
])
async def test_other_dependencies_are_waited_out_too(error: BaseException) -> None:
    if isinstance(error, TransientError):
        error.__cause__ = asyncpg.ConnectionDoesNotExistError("closed")
    policy = DeliveryPolicy("svc-dep", FAST, 1 << 20, Outages("svc-dep"))
    flaky = Flaky(*([error] * (FAST.max_attempts + 3)))
    outcome, letters = await deliver(policy, flaky)
    assert (outcome, letters) == ("retried", [])


async def test_readiness_and_the_gauge_name_what_is_awaited() -> None:
    outages = Outages("svc-gauge")
    policy = DeliveryPolicy("svc-gauge", FAST, 1 << 20, outages)
    gate = asyncio.Event()
    seen: dict[str, Any] = {}

    async def attempt(n: int) -> None:
        if not gate.is_set():
            if not outages.ready:
                seen["describe"] = outages.describe()
                seen["gauge"] = REGISTRY.get_sample_value("reelfab_dependency_up",
                                                          {"service": "svc-gauge", "dependency": "object store"})
                gate.set()
            raise StoreUnavailable("volume gone")

    outcome, _ = await deliver(policy, attempt)
    assert outcome == "retried"
    assert "object store" in seen["describe"] and "volume gone" in seen["describe"]["object store"]
    assert seen["gauge"] == 0.0
    assert REGISTRY.get_sample_value("reelfab_dependency_up", {"service": "svc-gauge", "dependency": "object store"}) == 1.0


async def test_faults_of_the_message_still_spend_the_budget_and_dead_letter() -> None:
    policy = DeliveryPolicy("svc-msg", FAST, 1 << 20, Outages("svc-msg"))
    flaky = Flaky(*[TransientError("handler bug")] * 10)
    outcome, [letter] = await deliver(policy, flaky)
    assert outcome == "dead_lettered" and flaky.attempts == [1, 2, 3] and letter.attempts == 3


async def test_an_outage_between_message_faults_does_not_reset_or_spend_the_budget() -> None:
    policy = DeliveryPolicy("svc-mix", FAST, 1 << 20, Outages("svc-mix"))
    down = DependencyUnavailable("postgresql", "restarting")
    flaky = Flaky(TransientError("a"), down, down, TransientError("b"), down, TransientError("c"))
    outcome, [letter] = await deliver(policy, flaky)
    assert outcome == "dead_lettered" and flaky.attempts == [1, 2, 2, 2, 3, 3] and letter.attempts == 3


def test_classification() -> None:
    assert outage_of(PermanentError("bad input")) is None
    assert outage_of(ValueError("x")) is None
    assert outage_of(DependencyUnavailable("kafka", "x")) == "kafka"
    from aiokafka.errors import KafkaConnectionError

    assert outage_of(KafkaConnectionError("no broker")) == "kafka"
    assert not is_permanent(DependencyUnavailable("kafka", "x"))


async def test_readiness_probes_see_a_broker_or_database_that_is_away_with_no_message_flowing() -> None:
    import socket

    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.service import probe_dependencies
    from tests.conftest import make_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = KafkaBus(make_settings(kafka_bootstrap=f"127.0.0.1:{port}"), "svc-probe", default_codec())

    class DeadPool:
        async def fetchval(self, _sql: str) -> Any:
            raise ConnectionRefusedError("connection refused")

    class LivePool:
        async def fetchval(self, _sql: str) -> Any:
            return 1

    outages = bus.policy.outages
    await probe_dependencies(bus, DeadPool())  # type: ignore[arg-type]
    assert set(outages.describe()) == {"postgresql", "kafka"} and not outages.ready
    assert REGISTRY.get_sample_value("reelfab_dependency_up", {"service": "svc-probe", "dependency": "kafka"}) == 0.0
    outages.answered()  # a message going through does not clear what a probe saw
    assert not outages.ready
    with socket.socket() as listener:  # a broker answers again
        listener.bind(("127.0.0.1", port))
        listener.listen()
        await probe_dependencies(bus, LivePool())  # type: ignore[arg-type]
    assert outages.ready and outages.describe() == {}
    assert REGISTRY.get_sample_value("reelfab_dependency_up", {"service": "svc-probe", "dependency": "postgresql"}) == 1.0


def test_routine_kafka_chatter_is_quiet_and_real_warnings_still_show(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from reelfab.logging import _RoutineKafkaChatter

    chatter = _RoutineKafkaChatter()

    def shown(name: str, message: str, level: int = logging.WARNING) -> bool:
        return chatter.filter(logging.LogRecord(name, level, __file__, 1, message, (), None))

    assert not shown("aiokafka.consumer.group_coordinator", "Heartbeat failed for group g because it is rebalancing")
    assert not shown("reelfab.faststream", "Auto create topics is disabled. Make sure the topics exist.")
    assert shown("aiokafka.conn", "Unable connect to 127.0.0.1:9092")
    assert shown("aiokafka.consumer.group_coordinator", "because it is rebalancing", logging.ERROR)


def test_asyncpg_pool_warnings_during_an_outage_keep_one_line_without_a_traceback() -> None:
    import logging
    import sys

    from reelfab.logging import _PoolOutageOneLine

    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5433)")
    except ConnectionRefusedError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, "Failed to restore the pool connection floor",
                               (), exc_info)
    assert _PoolOutageOneLine().filter(record)
    text = logging.Formatter("%(levelname)s %(name)s %(message)s").format(record)
    assert "\n" not in text and "Traceback" not in text
    assert "Failed to restore the pool connection floor: ConnectionRefusedError" in text and "5433" in text
    other = logging.LogRecord("reelfab.x", logging.WARNING, __file__, 1, "kept", (), exc_info)
    assert _PoolOutageOneLine().filter(other) and other.exc_info is exc_info  # others keep their traceback


async def test_a_dependency_with_a_probe_is_back_only_when_its_probe_answers() -> None:
    """A registry outage seen by a job is not cleared by another message that went through without the
    registry (a job failed for its deadline): only the registry's health probe clears it."""
    from reelfab.errors import DependencyUnavailable
    from reelfab.service import probe_dependencies

    class Bus:
        policy = type("P", (), {"outages": Outages("svc-registry-probe")})()

        async def reachable(self) -> None:
            return None

    class LivePool:
        async def fetchval(self, _sql: str) -> Any:
            return 1

    registry_up = False

    async def ping() -> None:
        if not registry_up:
            raise DependencyUnavailable("consent registry", "http://127.0.0.1:8081 does not answer")

    bus = Bus()
    outages = bus.policy.outages
    outages.probed_only.add("consent registry")
    outages.waiting("consent registry", DependencyUnavailable("consent registry", "does not answer"))
    outages.answered()  # a message that never asked the registry
    assert set(outages.describe()) == {"consent registry"} and not outages.ready
    await probe_dependencies(bus, LivePool(), {"consent registry": ping})  # type: ignore[arg-type]
    assert not outages.ready
    registry_up = True
    await probe_dependencies(bus, LivePool(), {"consent registry": ping})  # type: ignore[arg-type]
    assert outages.ready
    labels = {"service": "svc-registry-probe", "dependency": "consent registry"}
    assert REGISTRY.get_sample_value("reelfab_dependency_up", labels) == 1.0
    outages.waiting("postgresql", ConnectionRefusedError("refused"))
    outages.answered()  # what has no probe is still cleared by a message going through
    assert outages.ready
