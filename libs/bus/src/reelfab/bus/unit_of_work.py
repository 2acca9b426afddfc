"""The unit of work a handler opens for one event: the mark that the event was processed, the service's
own table changes and the outbox rows it announces commit in one transaction, or none of them do.

A handler reads::

    async with uow.begin(event, "swap") as tx:
        if not tx.fresh:               # a redelivery: this handler already did its work
            return
        await tx.publish(SWAP_COMPLETED, completed)

Two implementations: ``PostgresUnitOfWork`` (asyncpg; the processed-event row first, so a concurrent
duplicate waits on its primary key) and ``InMemoryUnitOfWork`` (a bus of ``InMemoryBus``'s kind, for
broker-free unit tests: published records reach the in-memory bus only when the unit commits). Both
refuse a topic the service does not declare it produces (its ServiceSpec, checked against the topic
catalogue by the contract tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from reelfab.contracts.records import Record
from reelfab.db import check_schema_name
from reelfab.errors import ReelfabError

from .base import Bus
from .message import Event
from .outbox import Outbox

Value = Record | Mapping[str, Any]


class UndeclaredTopic(ReelfabError):
    """A handler published to a topic its service does not list among what it produces."""


class Transaction(Protocol):
    @property
    def fresh(self) -> bool:
        """False when the event was processed before by this handler: do nothing."""

    @property
    def conn(self) -> Any:
        """The connection the service's own table changes go through (None in memory)."""

    async def publish(self, topic: str, value: Value) -> None:
        """Announce ``value`` on ``topic`` when (and only when) this unit commits."""


class UnitOfWork(Protocol):
    def begin(self, event: Event[Any], handler: str) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def processed(self, event_id: str) -> bool:
        """Whether some handler already committed its work for this event (a cheap early check)."""


def _check_declared(produces: frozenset[str], topic: str) -> None:
    if topic not in produces:
        raise UndeclaredTopic(
            f"published to {topic}, which this service does not declare it produces "
            f"(declared: {', '.join(sorted(produces)) or 'none'}); add it to the service's ServiceSpec and to "
            "schemas/topics.toml"
        )


@dataclass
class _PgTransaction:
    fresh: bool
    conn: asyncpg.Connection
    outbox: Outbox
    produces: frozenset[str]

    async def publish(self, topic: str, value: Value) -> None:
        _check_declared(self.produces, topic)
        await self.outbox.add(self.conn, topic, value)


class PostgresUnitOfWork:
    def __init__(self, pool: asyncpg.Pool, schema: str, outbox: Outbox, produces: frozenset[str]) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self.outbox = outbox
        self.produces = produces

    @contextlib.asynccontextmanager
    async def begin(self, event: Event[Any], handler: str) -> AsyncIterator[Transaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f'INSERT INTO "{self.schema}".processed_events (event_id, topic, handler) VALUES ($1, $2, $3) '
                "ON CONFLICT (event_id) DO NOTHING RETURNING 1",
                event.event_id, event.topic, handler,
            )
            yield _PgTransaction(inserted is not None, conn, self.outbox, self.produces)

    async def processed(self, event_id: str) -> bool:
        return bool(await self.pool.fetchval(
            f'SELECT 1 FROM "{self.schema}".processed_events WHERE event_id = $1', event_id))


@dataclass
class _MemoryTransaction:
    fresh: bool
    produces: frozenset[str]
    bus: Bus
    conn: Any = None
    pending: list[tuple[str, Value]] = field(default_factory=list)

    async def publish(self, topic: str, value: Value) -> None:
        _check_declared(self.produces, topic)
        self.bus.encode(topic, value)  # a record that does not fit its schema fails here, as in the outbox
        self.pending.append((topic, value))


class InMemoryUnitOfWork:
    """For unit tests: commits publish to ``bus`` (an InMemoryBus) and remember the event as processed;
    a handler that raises leaves no trace. ``published`` keeps every committed (topic, value)."""

    def __init__(self, bus: Bus, produces: frozenset[str] | set[str] | tuple[str, ...]) -> None:
        self.bus = bus
        self.produces = frozenset(produces)
        self.done: dict[str, str] = {}  # event id -> handler
        self.published: list[tuple[str, Value]] = []
        self.commits = 0
        self.rollbacks = 0

    @contextlib.asynccontextmanager
    async def begin(self, event: Event[Any], handler: str) -> AsyncIterator[Transaction]:
        tx = _MemoryTransaction(event.event_id not in self.done, self.produces, self.bus)
        try:
            yield tx
        except BaseException:
            self.rollbacks += 1
            raise
        if tx.fresh:
            self.done[event.event_id] = handler
            for topic, value in tx.pending:
                await self.bus.publish(topic, value)
                self.published.append((topic, value))
            self.commits += 1

    async def processed(self, event_id: str) -> bool:
        return event_id in self.done

    def on(self, topic: str) -> list[Value]:
        """What committed units published on ``topic``, in order."""
        return [value for t, value in self.published if t == topic]
