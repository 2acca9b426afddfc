"""The planner's database for its commands: a pool on the planner's schema (or another, for tests),
migrated as the service migrates it, closed when the command is done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def planner_database(schema: str | None = None) -> AsyncIterator[tuple[Any, str]]:
    """(pool, schema) of the planner's tables, migrated."""
    from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
    from reelfab.settings import get_settings

    from .main import SPEC

    schema = schema or SPEC.db_schema
    pool = await create_pool(get_settings())
    try:
        await migrate(pool, schema, delivery_migrations() + package_migrations(SPEC.package))
        yield pool, schema
    finally:
        await pool.close()
