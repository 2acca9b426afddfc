"""The planner's tables (migrations/0002): the job ledger and its steps, plans, flags and the latest
policy per arm space. Writes go through the unit of work's connection, in the transaction that
announces them; reads use the pool. The in-memory twin serves the broker-free tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from reelfab.db import check_schema_name

from .ledger import FAILED, UNFINISHED, Advance, Step, advance
from .plan import Plan, PlannedJob
from .policy import Policy


@dataclass(frozen=True)
class JobRow:
    job_id: str
    status: str
    origin: str
    created_at: datetime
    updated_at: datetime
    plan_id: str | None = None
    trend_id: str | None = None
    arm_id: str | None = None
    subject_id: str | None = None
    consent_version: int | None = None
    template_id: str | None = None
    music_id: str | None = None
    caption_style: str | None = None
    swapper_model: str | None = None
    model_licence: str | None = None
    priority: int = 0
    deadline: datetime | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    failed_stage: str | None = None
    failed_reason_code: str | None = None
    failed_reason: str | None = None
    steps: tuple[Step, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "steps"}
        out["steps"] = [{"status": s.status, "at": s.at, "detail": s.detail} for s in self.steps]
        return out


@dataclass(frozen=True)
class Seen:
    """What a stage event tells the ledger about a job besides its step (for a job it has not seen)."""

    subject_id: str | None = None
    consent_version: int | None = None
    template_id: str | None = None
    arm_id: str | None = None
    trend_id: str | None = None
    failure: tuple[str, str, str] | None = None  # stage, reason code, reason


@dataclass(frozen=True)
class LedgerCounts:
    by_status: dict[str, int]
    oldest_unfinished_s: float | None


def job_row(job: PlannedJob, plan: Plan, origin: str, now: datetime) -> JobRow:
    lineage = {"template_sha256": job.template.sha256, "source_image_sha256": job.subject.image_sha256,
               "template_uri": job.template.uri, "music_sha256": job.music.sha256 if job.music else None,
               "music_licence": job.music.licence if job.music else None, "model_reason": job.model.reason}
    return JobRow(job.job_id, "requested", origin, now, now, plan.plan_id, job.trend_id, job.combination.arm_id,
                  job.subject.subject_id, job.subject.consent_version, job.template.template_id,
                  job.music.music_id if job.music else None, job.style.style_id, job.model.model, job.model.licence,
                  job.priority, job.deadline, lineage, steps=(Step("requested", now, {"plan_id": plan.plan_id}),))


class PlannerStore(Protocol):
    async def add_plan(self, conn: Any, plan: Plan, trigger: str, asked: int, rows: Sequence[JobRow], at: datetime) -> None: ...
    async def record_step(self, conn: Any, job_id: str, step: Step, seen: Seen) -> Advance: ...
    async def job(self, job_id: str) -> JobRow | None: ...
    async def jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobRow]: ...
    async def counts(self, now: datetime) -> LedgerCounts: ...
    async def produced(self) -> frozenset[str]: ...
    async def planned_today(self, now: datetime) -> dict[str, int]: ...
    async def set_flag(self, conn: Any, kind: str, item_id: str, action: str, reason: str, at: datetime) -> None: ...
    async def disabled(self) -> frozenset[tuple[str, str]]: ...
    async def save_policy(self, conn: Any, space: str, version: int, arms: list[dict[str, Any]], at: datetime) -> None: ...
    async def policy(self) -> dict[str, tuple[int, list[dict[str, Any]]]]: ...


def known(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A step's facts for the job's lineage: a field the event left empty never erases what is known."""
    return {k: v for k, v in detail.items() if v is not None}


def _midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


_COLUMNS = ("job_id", "status", "origin", "plan_id", "trend_id", "arm_id", "subject_id", "consent_version", "template_id",
            "music_id", "caption_style", "swapper_model", "model_licence", "priority", "deadline", "lineage",
            "failed_stage", "failed_reason_code", "failed_reason", "created_at", "updated_at")


class PostgresPlannerStore:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    async def add_plan(self, conn: Any, plan: Plan, trigger: str, asked: int, rows: Sequence[JobRow], at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('plans')} (plan_id, trigger, trend_id, asked, planned, candidates, notes, at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
            plan.plan_id, trigger, next((r.trend_id for r in rows), None), asked, len(rows), plan.candidates,
            json.dumps(plan.notes), at)
        placeholders = ", ".join(f"${i + 1}" + ("::jsonb" if c == "lineage" else "") for i, c in enumerate(_COLUMNS))
        await conn.executemany(
            f"INSERT INTO {self._t('jobs')} ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
            [tuple(json.dumps(r.lineage) if c == "lineage" else getattr(r, c) for c in _COLUMNS) for r in rows])
        await conn.executemany(
            f"INSERT INTO {self._t('job_steps')} (job_id, status, at, detail) VALUES ($1, $2, $3, $4::jsonb)",
            [(r.job_id, s.status, s.at, json.dumps(s.detail)) for r in rows for s in r.steps])

    async def record_step(self, conn: Any, job_id: str, step: Step, seen: Seen) -> Advance:
        row = await conn.fetchrow(f"SELECT status FROM {self._t('jobs')} WHERE job_id = $1 FOR UPDATE", job_id)
        moved = advance(row["status"] if row else None, step)
        failure = seen.failure if step.status == FAILED and moved.changed else None
        if row is None:
            await conn.execute(
                f"INSERT INTO {self._t('jobs')} (job_id, status, origin, subject_id, consent_version, template_id, "
                "arm_id, trend_id, lineage, failed_stage, failed_reason_code, failed_reason, created_at, updated_at) "
                "VALUES ($1, $2, 'external', $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $12)",
                job_id, moved.status, seen.subject_id, seen.consent_version, seen.template_id, seen.arm_id,
                seen.trend_id, json.dumps(known(step.detail)), *(failure or (None, None, None)), step.at)
        else:
            await conn.execute(
                f"UPDATE {self._t('jobs')} SET status = $2, lineage = lineage || $3::jsonb, updated_at = $4, "
                "failed_stage = COALESCE($5, failed_stage), failed_reason_code = COALESCE($6, failed_reason_code), "
                "failed_reason = COALESCE($7, failed_reason) WHERE job_id = $1",
                job_id, moved.status, json.dumps(known(step.detail)), step.at, *(failure or (None, None, None)))
        await conn.execute(f"INSERT INTO {self._t('job_steps')} (job_id, status, at, detail) VALUES ($1, $2, $3, $4::jsonb)",
                           job_id, step.status, step.at, json.dumps(step.detail))
        return moved

    async def job(self, job_id: str) -> JobRow | None:
        row = await self.pool.fetchrow(f"SELECT * FROM {self._t('jobs')} WHERE job_id = $1", job_id)
        if row is None:
            return None
        steps = await self.pool.fetch(f"SELECT status, at, detail FROM {self._t('job_steps')} WHERE job_id = $1 ORDER BY seq",
                                      job_id)
        return _row(row, tuple(Step(s["status"], s["at"], json.loads(s["detail"])) for s in steps))

    async def jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobRow]:
        rows = await self.pool.fetch(
            f"SELECT * FROM {self._t('jobs')} WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, job_id LIMIT $2",
            status, limit)
        return [_row(r, ()) for r in rows]

    async def counts(self, now: datetime) -> LedgerCounts:
        rows = await self.pool.fetch(f"SELECT status, count(*) AS n FROM {self._t('jobs')} GROUP BY status")
        oldest = await self.pool.fetchval(f"SELECT min(created_at) FROM {self._t('jobs')} WHERE status = ANY($1)",
                                          list(UNFINISHED))
        return LedgerCounts({r["status"]: r["n"] for r in rows}, (now - oldest).total_seconds() if oldest else None)

    async def produced(self) -> frozenset[str]:
        rows = await self.pool.fetch(
            f"SELECT DISTINCT arm_id FROM {self._t('jobs')} WHERE arm_id IS NOT NULL AND status <> 'failed'")
        return frozenset(r["arm_id"] for r in rows)

    async def planned_today(self, now: datetime) -> dict[str, int]:
        rows = await self.pool.fetch(
            f"SELECT subject_id, count(*) AS n FROM {self._t('jobs')} WHERE origin <> 'external' AND status <> 'failed' "
            "AND created_at >= $1 GROUP BY subject_id", _midnight(now))
        return {r["subject_id"]: r["n"] for r in rows}

    async def set_flag(self, conn: Any, kind: str, item_id: str, action: str, reason: str, at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('flags')} (kind, item_id, action, reason, at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (kind, item_id) DO UPDATE SET action = $3, reason = $4, at = $5", kind, item_id, action, reason, at)

    async def disabled(self) -> frozenset[tuple[str, str]]:
        rows = await self.pool.fetch(f"SELECT kind, item_id FROM {self._t('flags')} WHERE action = 'DISABLED'")
        return frozenset((r["kind"], r["item_id"]) for r in rows)

    async def save_policy(self, conn: Any, space: str, version: int, arms: list[dict[str, Any]], at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('policy')} (arm_space, version, arms, updated_at) VALUES ($1, $2, $3::jsonb, $4) "
            "ON CONFLICT (arm_space) DO UPDATE SET version = $2, arms = $3::jsonb, updated_at = $4",
            space, version, json.dumps(arms), at)  # the topic's order, as Policy.apply takes it

    async def policy(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        rows = await self.pool.fetch(f"SELECT arm_space, version, arms FROM {self._t('policy')}")
        return {r["arm_space"]: (r["version"], json.loads(r["arms"])) for r in rows}


def _row(r: Mapping[str, Any], steps: tuple[Step, ...]) -> JobRow:
    values = {c: r[c] for c in _COLUMNS}
    values["lineage"] = json.loads(values["lineage"]) if isinstance(values["lineage"], str) else values["lineage"]
    return JobRow(**values, steps=steps)


@dataclass
class InMemoryPlannerStore:
    rows: dict[str, JobRow] = field(default_factory=dict)
    plans: dict[str, tuple[str, int, Plan]] = field(default_factory=dict)
    flags: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    spaces: dict[str, tuple[int, list[dict[str, Any]]]] = field(default_factory=dict)

    async def add_plan(self, conn: Any, plan: Plan, trigger: str, asked: int, rows: Sequence[JobRow], at: datetime) -> None:
        self.plans[plan.plan_id] = (trigger, asked, plan)
        self.rows.update({r.job_id: r for r in rows})

    async def record_step(self, conn: Any, job_id: str, step: Step, seen: Seen) -> Advance:
        row = self.rows.get(job_id)
        moved = advance(row.status if row else None, step)
        failure = seen.failure if step.status == FAILED and moved.changed else None
        if row is None:
            row = JobRow(job_id, moved.status, "external", step.at, step.at, subject_id=seen.subject_id,
                         consent_version=seen.consent_version, template_id=seen.template_id, arm_id=seen.arm_id,
                         trend_id=seen.trend_id)
        stage, code, reason = failure or (row.failed_stage, row.failed_reason_code, row.failed_reason)
        self.rows[job_id] = replace(row, status=moved.status, updated_at=step.at, lineage={**row.lineage, **known(step.detail)},
                                    failed_stage=stage, failed_reason_code=code, failed_reason=reason,
                                    steps=(*row.steps, step))
        return moved

    async def job(self, job_id: str) -> JobRow | None:
        return self.rows.get(job_id)

    async def jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobRow]:
        rows = [r for r in self.rows.values() if status is None or r.status == status]
        return sorted(rows, key=lambda r: (r.created_at, r.job_id), reverse=True)[:limit]

    async def counts(self, now: datetime) -> LedgerCounts:
        by: dict[str, int] = {}
        for r in self.rows.values():
            by[r.status] = by.get(r.status, 0) + 1
        oldest = min((r.created_at for r in self.rows.values() if r.status in UNFINISHED), default=None)
        return LedgerCounts(by, (now - oldest).total_seconds() if oldest else None)

    async def produced(self) -> frozenset[str]:
        return frozenset(r.arm_id for r in self.rows.values() if r.arm_id and r.status != FAILED)

    async def planned_today(self, now: datetime) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows.values():
            if r.origin != "external" and r.status != FAILED and r.subject_id and r.created_at >= _midnight(now):
                out[r.subject_id] = out.get(r.subject_id, 0) + 1
        return out

    async def set_flag(self, conn: Any, kind: str, item_id: str, action: str, reason: str, at: datetime) -> None:
        self.flags[(kind, item_id)] = (action, reason)

    async def disabled(self) -> frozenset[tuple[str, str]]:
        return frozenset(k for k, (action, _) in self.flags.items() if action == "DISABLED")

    async def save_policy(self, conn: Any, space: str, version: int, arms: list[dict[str, Any]], at: datetime) -> None:
        self.spaces[space] = (version, arms)

    async def policy(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        return dict(self.spaces)


def restore_policy(saved: Mapping[str, tuple[int, list[dict[str, Any]]]]) -> Policy:
    policy = Policy()
    for space, (version, arms) in saved.items():
        policy.apply(space, version, arms, None)
    return policy


def since(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)
