"""The unit of work, in both implementations (PostgreSQL and in memory), keeps the same promises: the
processed mark, the service's writes and the announced records commit together or not at all; a
redelivery finds the unit done; a topic the service does not declare is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.message import Event
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import InMemoryUnitOfWork, PostgresUnitOfWork, UndeclaredTopic, UnitOfWork
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import model_for
from reelfab.settings import Settings
from tests.contract.records import swap_requested

FAILED = "reelfab.job.failed.v1"
PRODUCES = frozenset({FAILED})


def _event(job: str = "job-1") -> Event[Any]:
    rec = model_for("reelfab.events.SwapRequested").model_validate(swap_requested(job))
    return Event(rec, "reelfab.swap.requested.v1", job, 0, 0, attempt=1)


def _failed(event: Event[Any]) -> dict[str, Any]:
    from reelfab.service import ServiceSpec, job_failed

    return job_failed(ServiceSpec("swapper-gpu", "x", "x", 1), event, "test.reason", "a test")


class Side:
    """One implementation, with a way to read what it committed."""

    uow: UnitOfWork

    async def published(self) -> list[str]:
        raise NotImplementedError


pytestmark = pytest.mark.postgres  # the PostgreSQL side needs the server; both sides run in one suite


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, pg_pool: Any, delivery_schema: str) -> AsyncIterator[Side]:
    settings = Settings()
    bus = InMemoryBus(settings, "swapper-gpu", default_codec())
    s = Side()
    if request.param == "memory":
        mem = InMemoryUnitOfWork(bus, PRODUCES)
        s.uow = mem

        async def published_memory() -> list[str]:
            return [v.job_id for _, v in mem.published]  # type: ignore[union-attr]

        s.published = published_memory  # type: ignore[method-assign]
        yield s
        return
    schema = delivery_schema
    s.uow = PostgresUnitOfWork(pg_pool, schema, Outbox(schema, bus), PRODUCES)

    async def published_pg() -> list[str]:
        rows = await pg_pool.fetch(f'SELECT topic FROM "{schema}".outbox ORDER BY id')
        return [r["topic"] for r in rows]

    s.published = published_pg  # type: ignore[method-assign]
    yield s


async def test_a_unit_commits_once_and_a_redelivery_finds_it_done(side: Side) -> None:
    ev = _event()
    async with side.uow.begin(ev, "swap") as tx:
        assert tx.fresh
        await tx.publish(FAILED, _failed(ev))
    async with side.uow.begin(ev, "swap") as tx:
        assert not tx.fresh  # the redelivery: nothing to do
    assert await side.uow.processed(ev.event_id)
    assert len(await side.published()) == 1


async def test_a_unit_that_raises_leaves_no_mark_and_announces_nothing(side: Side) -> None:
    ev = _event("job-2")
    with pytest.raises(RuntimeError):
        async with side.uow.begin(ev, "swap") as tx:
            await tx.publish(FAILED, _failed(ev))
            raise RuntimeError("the handler failed after publishing")
    assert not await side.uow.processed(ev.event_id)
    assert await side.published() == []
    async with side.uow.begin(ev, "swap") as tx:  # the retry runs
        assert tx.fresh


async def test_an_undeclared_topic_is_refused_naming_it(side: Side) -> None:
    ev = _event("job-3")
    with pytest.raises(UndeclaredTopic, match="reelfab.render.completed.v1"):
        async with side.uow.begin(ev, "swap") as tx:
            await tx.publish("reelfab.render.completed.v1", {})
    assert await side.published() == []
