"""The rendered_jobs table (migrations/0001): which jobs this service rendered, by subject, so a
withdrawn consent reaches their media. A row is written on the unit of work's connection, in the
transaction that announces the job; the in-memory twin serves the unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from reelfab.db import check_schema_name


class PostgresRenderedJobs:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.table = f'"{check_schema_name(schema)}".rendered_jobs'

    async def add(self, conn: Any, job_id: str, subject_id: str) -> None:
        await conn.execute(f"INSERT INTO {self.table} (job_id, subject_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           job_id, subject_id)

    async def of_subject(self, subject: str) -> list[str]:
        return [row["job_id"] for row in await self.pool.fetch(
            f"SELECT job_id FROM {self.table} WHERE subject_id = $1 ORDER BY job_id", subject)]

    async def remove(self, subject: str, job_ids: Sequence[str]) -> None:
        await self.pool.execute(f"DELETE FROM {self.table} WHERE subject_id = $1 AND job_id = ANY($2)",
                                subject, list(job_ids))


class InMemoryRenderedJobs:
    def __init__(self) -> None:
        self.rows: dict[str, str] = {}  # job id -> face id

    async def add(self, conn: Any, job_id: str, subject_id: str) -> None:
        self.rows.setdefault(job_id, subject_id)

    async def of_subject(self, subject: str) -> list[str]:
        return sorted(job for job, face in self.rows.items() if face == subject)

    async def remove(self, subject: str, job_ids: Sequence[str]) -> None:
        for job in job_ids:
            if self.rows.get(job) == subject:
                del self.rows[job]
