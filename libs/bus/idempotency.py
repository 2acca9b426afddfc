"""Idempotent handling: a handler's table changes and the record that it processed an event
commit in one transaction, so a redelivered event changes nothing (DESIGN.md delivery rules)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from reelfab.db import check_schema_name

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
