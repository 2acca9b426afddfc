"""PostgreSQL through asyncpg: a pool per service and versioned SQL migrations, each service in
its own schema. Migrations are plain ``NNNN_name.sql`` files run in order, once, under an
advisory lock (so replicas starting together do not race), with a checksum so an edited
migration that already ran is reported instead of silently diverging."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from reelfab.errors import PermanentError, StackError
from reelfab.settings import Settings

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(PermanentError):
    pass


@dataclass(frozen=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise MigrationError(f"schema name {schema!r} must be lower-case letters, digits and '_'")
    return schema


async def create_pool(settings: Settings, **kwargs: object) -> asyncpg.Pool:
    """A pool on the configured PostgreSQL; when it does not answer, a StackError that says where it looked
    and what to do (the CLI prints it as one line)."""
    try:
        return await asyncpg.create_pool(
            settings.postgres_dsn,
            min_size=settings.postgres_pool_min,
            max_size=settings.postgres_pool_max,
            **kwargs,
        )
    except (OSError, asyncpg.CannotConnectNowError) as exc:
        raise StackError(
            f"PostgreSQL is not answering on {settings.postgres_host}:{settings.postgres_port} "
            f"({type(exc).__name__}: {exc}) — start the local stack with `make up`, or point REELFAB_POSTGRES_HOST "
            "and REELFAB_POSTGRES_PORT at your server"
        ) from exc


def load_migrations(source: str, folder: Traversable) -> list[Migration]:
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(source, int(m.group(1)), m.group(2), entry.read_text()))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"{source}: migration file {entry.name!r} is not named NNNN_name.sql")
    found.sort(key=lambda mg: mg.version)
    versions = [mg.version for mg in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{source}: two migrations share a version number: {versions}")
    return found


def package_migrations(package: str) -> list[Migration]:
    """Migrations shipped in ``<package>/migrations/`` (a service's own tables); none is fine."""
    folder = resources.files(package) / "migrations"
    return load_migrations(package, folder) if folder.is_dir() else []


def delivery_migrations() -> list[Migration]:
    """The tables every service needs for delivery rules: processed events and the outbox."""
    return load_migrations("reelfab.delivery", Path(__file__).resolve().parent / "db_migrations")


async def migrate(pool: asyncpg.Pool, schema: str, migrations: list[Migration]) -> list[Migration]:
    """Apply what has not run yet in ``schema``; returns what was applied."""
    check_schema_name(schema)
    applied: list[Migration] = []
    async with pool.acquire() as conn:
        lock_key = int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                        source text NOT NULL, version int NOT NULL, name text NOT NULL,
                        checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (source, version))"""
            )
            # before the workspace (2026-12) a service's migrations were recorded under reelfab_services.<folder>
            for source in {mg.source for mg in migrations if mg.source.startswith("reelfab_")}:
                legacy = "reelfab_services." + source.removeprefix("reelfab_")
                await conn.execute(
                    f'UPDATE "{schema}".schema_migrations SET source = $1 WHERE source = $2', source, legacy
                )
            rows = await conn.fetch(f'SELECT source, version, checksum FROM "{schema}".schema_migrations')
            done = {(r["source"], r["version"]): r["checksum"] for r in rows}
            for mg in migrations:
                previous = done.get((mg.source, mg.version))
                if previous is not None:
                    if previous != mg.checksum:
                        raise MigrationError(
                            f"{schema}: migration {mg.source} {mg.version:04d}_{mg.name} was changed after it "
                            "ran; add a new migration instead of editing an applied one"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(mg.sql)
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (source, version, name, checksum) '
                        "VALUES ($1, $2, $3, $4)",
                        mg.source, mg.version, mg.name, mg.checksum,
                    )
                applied.append(mg)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied


async def delete_older(pool: asyncpg.Pool, schema: str, table: str, key: str, where: str, older_than: object, *,
                       dry_run: bool = False, batch_size: int = 10_000) -> int:
    """Delete the rows of ``schema.table`` matching ``where`` (which uses ``$1`` for ``older_than``) in
    batches of ``batch_size`` keyed by ``key``, so a large backlog never holds one long transaction;
    returns how many went (with ``dry_run``, how many would). Table, key and condition are ours, never
    a caller's input."""
    check_schema_name(schema)
    if dry_run:
        return int(await pool.fetchval(f'SELECT count(*) FROM "{schema}".{table} WHERE {where}', older_than))
    total = 0
    while True:
        status = await pool.execute(
            f'DELETE FROM "{schema}".{table} WHERE {key} IN '
            f'(SELECT {key} FROM "{schema}".{table} WHERE {where} ORDER BY {key} LIMIT $2)',
            older_than, batch_size,
        )
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch_size:
            return total
