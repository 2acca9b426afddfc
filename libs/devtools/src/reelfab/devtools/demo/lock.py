"""One demo at a time on a stack: the demo drops and recreates its own PostgreSQL schemas and moves its
consumer groups at the start of each run, so a second run on the same PostgreSQL would pull the first
one's tables from under it. A session-level advisory lock, held on a connection of its own for the
whole run (released when that connection closes, also when the process dies), refuses the second run
before it touches anything, naming the running one from a note the holder leaves in the state folder."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from reelfab.db import create_pool
from reelfab.settings import Settings

from .errors import DemoRefused

LOCK_KEY = 0x5EE1FAB0DE30  # pg_try_advisory_lock(bigint): "reelfab demo"


def owner_note(settings: Settings) -> Path:
    return Path(settings.state_dir) / "demo.owner"


def describe_owner(note: Path) -> str:
    try:
        owner = json.loads(note.read_text())
        return f"pid {owner['pid']}, writing to {owner['out']!r}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "started elsewhere: no note of it in this state folder"


@asynccontextmanager
async def one_demo_at_a_time(settings: Settings, out: Path) -> AsyncIterator[None]:
    pool = await create_pool(settings.model_copy(update={"postgres_pool_min": 1, "postgres_pool_max": 1}))
    try:
        async with pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                raise DemoRefused(f"another demo is running on this stack ({describe_owner(owner_note(settings))}); "
                                  "wait for it to finish or stop it (Ctrl-C in its terminal)")
            note = owner_note(settings)
            with suppress(OSError):
                note.parent.mkdir(parents=True, exist_ok=True)
                note.write_text(json.dumps({"pid": os.getpid(), "out": str(out),
                                            "since": datetime.now(UTC).isoformat()}))
            try:
                yield
            finally:
                with suppress(OSError):
                    note.unlink()
                with suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        with suppress(Exception):
            await asyncio.wait_for(pool.close(), 10)
