"""Idempotent handling: a handler's table changes and the record that it processed an event
commit in one transaction, so a redelivered event changes nothing (docs/architecture.md "Delivery rules")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from reelfab import metrics
from reelfab.db import check_schema_name, delete_older

from .message import Event

T = TypeVar("T")


async def handle_once(
    pool: asyncpg.Pool,
    schema: str,
    event: Event[Any],
    handler: str,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> tuple[bool, T | None]:
    """Run ``work(conn)`` inside a transaction unless ``event`` was processed before.

    Returns (True, result) when it ran, (False, None) for a duplicate. The processed-event row is
    inserted first: a concurrent duplicate waits on its primary key and then finds it taken."""
    check_schema_name(schema)
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            f'INSERT INTO "{schema}".processed_events (event_id, topic, handler) VALUES ($1, $2, $3) '
            "ON CONFLICT (event_id) DO NOTHING RETURNING 1",
            event.event_id, event.topic, handler,
        )
        if inserted is None:
            return False, None
        return True, await work(conn)


async def was_processed(pool: asyncpg.Pool, schema: str, event_id: str) -> bool:
    check_schema_name(schema)
    return bool(await pool.fetchval(f'SELECT 1 FROM "{schema}".processed_events WHERE event_id = $1', event_id))


async def prune_processed(
    pool: asyncpg.Pool, schema: str, older_than: datetime, *, dry_run: bool = False, batch_size: int = 10_000
) -> int:
    """Delete ``schema``'s processed-event marks recorded before ``older_than``; returns how many
    went (or, with ``dry_run``, would go). ``older_than`` must lie beyond the redelivery horizon:
    an event redelivered after its mark is gone would be handled again."""
    total = await delete_older(pool, schema, "processed_events", "event_id", "processed_at < $1", older_than,
                               dry_run=dry_run, batch_size=batch_size)
    if total and not dry_run:
        metrics.RETENTION_ROWS_DELETED.labels(schema, "processed_events").inc(total)
    return total
