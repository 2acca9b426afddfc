"""The planner, publisher and analytics handlers (each records what it received until its own issue
gives it decisions): broker-free, on the in-memory bus and unit of work."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.unit_of_work import InMemoryUnitOfWork
from reelfab.contracts.codec import default_codec
from reelfab.service import InMemoryReceivedEvents, ServiceContext, build_context
from reelfab.settings import Settings

from .samples import event

SERVICES = ["reelfab_publisher"]  # the services that only record their events so far
DECIDING = ["reelfab_planner", "reelfab_analytics"]


def _context(package: str) -> tuple[Any, ServiceContext]:
    main = importlib.import_module(f"{package}.main")
    settings = Settings()
    ctx = build_context(main.SPEC, settings, InMemoryBus(settings, main.SPEC.name, default_codec()), None, main.wire)
    return main, ctx


@pytest.mark.parametrize("package", SERVICES)
def test_every_consumed_topic_has_a_handler(package: str) -> None:
    main, ctx = _context(package)
    handlers = importlib.import_module(f"{package}.handlers").HANDLED
    assert set(handlers) == set(main.SPEC.consumes)
    assert sorted(s.topic.name for s in ctx.bus.subscriptions) == sorted(main.SPEC.consumes)  # wired, once each


@pytest.mark.parametrize("package", DECIDING)
def test_every_declared_topic_is_consumed_once(package: str) -> None:
    main, ctx = _context(package)
    assert sorted(s.topic.name for s in ctx.bus.subscriptions) == sorted(main.SPEC.consumes)


@pytest.mark.parametrize("package", SERVICES)
async def test_each_event_is_recorded_once_even_when_redelivered(package: str) -> None:
    main, ctx = _context(package)
    handlers = importlib.import_module(f"{package}.bootstrap").bootstrap(ctx)
    for topic, handle in handlers.items():
        ev = event(topic)
        await handle(ev)
        await handle(ev)  # redelivery
    received = ctx.extras["received_events"]
    assert isinstance(received, InMemoryReceivedEvents)
    assert sorted(t for _, t, _ in received.rows) == sorted(handlers)  # once per topic, not twice
    assert isinstance(ctx.uow, InMemoryUnitOfWork)
    assert ctx.uow.published == []  # recording announces nothing


async def test_a_failing_write_leaves_the_event_unprocessed() -> None:
    _, ctx = _context("reelfab_publisher")

    class Broken(InMemoryReceivedEvents):
        async def add(self, conn: Any, ev: Any) -> None:
            raise RuntimeError("disk full")

    handle = importlib.import_module("reelfab_publisher.bootstrap").bootstrap(ctx, received=Broken())[
        "reelfab.render.completed.v1"]
    ev = event("reelfab.render.completed.v1")
    with pytest.raises(RuntimeError):
        await handle(ev)
    assert isinstance(ctx.uow, InMemoryUnitOfWork)
    assert not await ctx.uow.processed(ev.event_id)  # redelivered later, it is handled then
