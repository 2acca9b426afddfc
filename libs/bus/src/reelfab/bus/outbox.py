"""Transactional outbox (docs/architecture.md "Delivery rules"): a service writes its table change and the
event announcing it in one PostgreSQL transaction; the relay publishes pending rows in order and
marks them with where they landed.

No loss: a row exists iff its transaction committed, and stays pending until Kafka acknowledged
it. No duplicate: every message carries its outbox id in a header; after a crash between publish
and mark, the relay first looks on the topic for the pending ids (from the rows' creation time
on) and marks the ones already there instead of sending them again. One relay per schema runs at
a time, held by a PostgreSQL advisory lock, so replicas do not race.

Latency: every row added also NOTIFYs the schema's channel, which PostgreSQL delivers when (and only
if) the transaction commits; the relay LISTENs on its lock's connection and wakes at once, so an
event leaves within milliseconds of its commit instead of at the next poll (the poll stays, for a
notification lost with a connection)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from reelfab import metrics
from reelfab.contracts.records import Record
from reelfab.db import check_schema_name, delete_older
from reelfab.logging import get_logger

from .base import Bus
from .message import Published
from .outage import outage_of

H_OUTBOX_SOURCE = "reelfab.outbox.source"
H_OUTBOX_ID = "reelfab.outbox.id"
_CLOCK_SKEW = timedelta(seconds=60)

log = get_logger("reelfab.outbox")


def notify_channel(schema: str) -> str:
    """The channel a schema's outbox rows are announced on (at commit)."""
    return f"reelfab_outbox_{check_schema_name(schema)}"[:63]


class Outbox:
    """Writes events into a service's outbox table, inside the caller's transaction."""

    def __init__(self, schema: str, bus: Bus) -> None:
        self.schema = check_schema_name(schema)
        self.bus = bus

    async def add(self, conn: asyncpg.Connection, topic: str, value: Record | Mapping[str, Any]) -> int:
        # encoding now means a record that does not fit its schema fails the business transaction
        t, key, payload, event_id = self.bus.encode(topic, value)
        headers = {"reelfab.producer": self.bus.service}
        if event_id:
            headers["reelfab.event-id"] = event_id
        # one round trip: the row, and the notification PostgreSQL holds back until the commit
        return int(
            await conn.fetchval(
                f'WITH row AS (INSERT INTO "{self.schema}".outbox (topic, key, value, headers) '
                "VALUES ($1, $2, $3, $4) RETURNING id) SELECT id FROM row, pg_notify($5, '')",
                t.name, key, payload, json.dumps(headers), notify_channel(self.schema),
            )
        )


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        bus: Bus,
        *,
        batch_size: int = 100,
        poll_interval_s: float = 0.2,
        after_publish: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.after_publish = after_publish  # fault injection point for crash tests
        self._lock_key = int.from_bytes(hashlib.sha256(f"outbox:{schema}".encode()).digest()[:8], "big", signed=True)
        self._needs_recovery = True
        self._wake = asyncio.Event()  # set by a notification: rows were committed
        self._outage_since: float | None = None  # monotonic time of the outage's first failure

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; waits as a standby while another relay holds the lock.

        The lock lives on one connection: when PostgreSQL restarts that connection dies and the lock
        with it, so the relay stops relaying and takes the lock again before sending anything more
        (two relays of one schema at once could send a row twice)."""
        while not stop.is_set():
            try:
                await self._run_holding_lock(stop)
            except Exception as exc:  # PostgreSQL away (at start, or the lock's connection lost)
                self._needs_recovery = True
                self._report("outbox relay lost the database; taking the lock again when it is back",
                             waiting_for=outage_of(exc), error=f"{type(exc).__name__}: {exc}")
                await _wait(stop, max(self.poll_interval_s, 1.0))

    async def _run_holding_lock(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as lock_conn:
            self._recovered()
            while not stop.is_set():
                if await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                    break
                await _wait(stop, 1.0)
            else:
                return
            channel = notify_channel(self.schema)
            listening = False
            try:
                with contextlib.suppress(Exception):  # without it the relay polls, as it always could
                    await lock_conn.add_listener(channel, self._notified)
                    listening = True
                while not stop.is_set():
                    if lock_conn.is_closed():
                        raise ConnectionError("the connection holding the relay's lock is closed")
                    self._wake.clear()  # a notification from now on means rows this look may miss
                    try:
                        sent = await self.relay_once()
                    except Exception as exc:  # broker or database away: keep the rows, look again later
                        self._needs_recovery = True
                        self._report("outbox relay failed; will retry", error=str(exc))
                        await lock_conn.fetchval("SELECT 1")  # raises when the lock went with the connection
                        await _wait(stop, max(self.poll_interval_s, 1.0))
                        continue
                    self._recovered()
                    if sent == 0:
                        await self._idle(stop)
            finally:
                if listening:
                    with contextlib.suppress(Exception):
                        await lock_conn.remove_listener(channel, self._notified)
                # cancelled mid-way the connection may be gone; the pool's reset unlocks it then
                with contextlib.suppress(Exception):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", self._lock_key)

    def _report(self, message: str, **fields: object) -> None:
        """One warning per outage (the retries of a long one are debug lines), not one a second."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(message, schema=self.schema, **fields)
        else:
            log.debug(message, schema=self.schema, **fields)

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.info("outbox relay is back", schema=self.schema,
                     after_s=round(time.monotonic() - self._outage_since, 1))
            self._outage_since = None

    def _notified(self, *args: object) -> None:
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        """Until a notification (since the last look), ``stop`` or the poll interval, whichever is first."""
        woken = asyncio.ensure_future(self._wake.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((woken, stopped), timeout=self.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (woken, stopped):
                waiter.cancel()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows in id order; returns how many were handled."""
        if self._needs_recovery:
            await self.recover()
            self._needs_recovery = False
        rows = await self.pool.fetch(
            f'SELECT id, topic, key, value, headers FROM "{self.schema}".outbox '
            "WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self.batch_size,
        )
        if not rows:
            return 0
        landed: list[tuple[int, Published]] = []
        for row in rows:
            headers = [(k, str(v).encode()) for k, v in json.loads(row["headers"]).items()]
            headers += [(H_OUTBOX_SOURCE, self.schema.encode()), (H_OUTBOX_ID, str(row["id"]).encode())]
            key = row["key"].encode() if row["key"] is not None else None
            landed.append((row["id"], await self.bus.publish_raw(row["topic"], bytes(row["value"]), key=key, headers=headers)))
        if self.after_publish:
            await self.after_publish([i for i, _ in landed])
        await self._mark(landed)
        metrics.OUTBOX_PENDING.labels(self.bus.service, "published").inc(len(landed))
        return len(landed)

    async def recover(self) -> int:
        """Mark pending rows that a previous relay published but did not live to mark."""
        pending = await self.pool.fetch(
            f'SELECT id, topic, created_at FROM "{self.schema}".outbox WHERE published_at IS NULL'
        )
        if not pending:
            return 0
        ids = {r["id"] for r in pending}
        since = min(r["created_at"] for r in pending) - _CLOCK_SKEW
        found: list[tuple[int, Published]] = []
        for topic in sorted({r["topic"] for r in pending}):
            for msg in await self.bus.scan(topic, since):
                if msg.header(H_OUTBOX_SOURCE) != self.schema.encode():
                    continue
                raw_id = msg.header(H_OUTBOX_ID)
                if raw_id is not None and int(raw_id) in ids:
                    found.append((int(raw_id), Published(msg.topic, msg.partition, msg.offset)))
                    ids.discard(int(raw_id))
        if found:
            await self._mark(found)
            metrics.OUTBOX_PENDING.labels(self.bus.service, "recovered").inc(len(found))
            log.info("outbox recovered rows already on the topic", schema=self.schema, rows=len(found))
        return len(found)

    async def _mark(self, landed: list[tuple[int, Published]]) -> None:
        await self.pool.executemany(
            f'UPDATE "{self.schema}".outbox SET published_at = now(), kafka_partition = $2, kafka_offset = $3 '
            "WHERE id = $1 AND published_at IS NULL",
            [(i, p.partition, p.offset) for i, p in landed],
        )

    async def pending(self) -> int:
        return int(await self.pool.fetchval(f'SELECT count(*) FROM "{self.schema}".outbox WHERE published_at IS NULL'))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def prune_outbox(
    pool: asyncpg.Pool, schema: str, older_than: datetime, *, dry_run: bool = False, batch_size: int = 10_000
) -> int:
    """Delete ``schema``'s outbox rows published before ``older_than``; returns how many went (or,
    with ``dry_run``, would go). Pending rows are never touched, however old: the relay still owes
    them to Kafka. Deletes in batches so a large backlog does not hold one long transaction."""
    total = await delete_older(pool, schema, "outbox", "id", "published_at IS NOT NULL AND published_at < $1",
                               older_than, dry_run=dry_run, batch_size=batch_size)
    if total and not dry_run:
        metrics.RETENTION_ROWS_DELETED.labels(schema, "outbox").inc(total)
    return total
