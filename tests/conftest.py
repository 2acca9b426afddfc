"""Shared fixtures. Tests marked ``kafka``/``postgres`` use the real local stack — the tests' own, with
the state folder and ports of tests/stack.env, never the one `make up` / `make demo` use: `make test`
starts it once; run alone, the ``stack`` fixture starts it and stops it again afterwards."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reelfab.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def stack_environment(path: Path = REPO / "tests" / "stack.env") -> dict[str, str]:
    """tests/stack.env's settings (a relative state folder made absolute from the repository's root)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if not sep or line.lstrip().startswith("#"):
            continue
        if name == "REELFAB_STATE_DIR" and not Path(value).is_absolute():
            value = str(REPO / value)
        values[name.strip()] = value.strip()
    return values


# before any Settings() is made: a bare `pytest` uses the tests' stack too (what the caller set wins, as
# `make test` sets the same values)
for _name, _value in stack_environment().items():
    os.environ.setdefault(_name, _value)


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        consumer_session_timeout_ms=6000,
        consumer_heartbeat_interval_ms=300,
        consumer_fetch_max_wait_ms=20,
        retry_max_attempts=3,
        retry_backoff_initial_s=0.01,
        retry_backoff_max_s=0.05,
        max_message_bytes=64 * 1024,
        outbox_poll_interval_s=0.05,
        log_format="pretty",
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """The real Kafka + PostgreSQL; started here only if nothing runs yet."""
    from reelfab.devtools.localstack import down, kafka_status, postgres_status, up

    infra = Settings()  # the stack as `make up` starts it; tests tune only client-side limits
    was_running = kafka_status(infra).get("running") and postgres_status(infra).get("running")
    up(infra, say=lambda _line: None)
    yield settings
    if not was_running:
        down(infra, say=lambda _line: None)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def pg_pool(stack: Settings) -> AsyncIterator[Any]:
    from reelfab.db import create_pool

    pool = await create_pool(stack)
    yield pool
    await pool.close()


@pytest.fixture
async def delivery_schema(pg_pool: Any) -> str:
    """A fresh PostgreSQL schema with the delivery tables (processed events, outbox)."""
    from reelfab.db import delivery_migrations, migrate

    schema = unique("t")
    await migrate(pg_pool, schema, delivery_migrations())
    return schema
