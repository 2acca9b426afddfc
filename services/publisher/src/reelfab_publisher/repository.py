"""The publisher's tables (migrations/0001_publisher.sql) through asyncpg: accounts, the review queue and
each job's posting progress, operators, the review audit, takedowns and the posts read back. Methods that
take ``conn`` run inside the caller's transaction (a unit of work, or the poster's own); the others use
the pool."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reelfab.db import check_schema_name

from .desk import OPEN_STATES, WAITING


@dataclass(frozen=True)
class AccountRow:
    name: str
    platform: str
    mode: str
    open_id: str | None
    access_token: bytes | None  # encrypted
    access_expires_at: datetime | None
    refresh_token: bytes | None  # encrypted
    refresh_expires_at: datetime | None
    token_problem: str | None
    auto_approve: bool
    auto_privacy: str | None
    sandbox: bool
    self_only: bool
    paused_until: datetime | None
    paused_reason: str | None


def _account(r: asyncpg.Record) -> AccountRow:
    return AccountRow(
        r["name"], r["platform"], r["mode"], r["open_id"],
        bytes(r["access_token"]) if r["access_token"] is not None else None, r["access_expires_at"],
        bytes(r["refresh_token"]) if r["refresh_token"] is not None else None, r["refresh_expires_at"],
        r["token_problem"], r["auto_approve"], r["auto_privacy"], r["sandbox"], r["self_only"],
        r["paused_until"], r["paused_reason"],
    )


class PublisherRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # ------------------------------------------------------------------ accounts

    async def add_account(self, a: AccountRow) -> bool:
        """False when the name is taken."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self._t('accounts')} (name, platform, mode, open_id, access_token, access_expires_at, "
            "refresh_token, refresh_expires_at, auto_approve, auto_privacy, sandbox) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (name) DO NOTHING RETURNING 1",
            a.name, a.platform, a.mode, a.open_id, a.access_token, a.access_expires_at, a.refresh_token,
            a.refresh_expires_at, a.auto_approve, a.auto_privacy, a.sandbox,
        )
        return done is not None

    async def account(self, name: str, conn: Any = None, *, lock: bool = False) -> AccountRow | None:
        sql = f"SELECT * FROM {self._t('accounts')} WHERE name = $1" + (" FOR UPDATE" if lock else "")
        row = await (conn or self.pool).fetchrow(sql, name)
        return _account(row) if row is not None else None

    async def accounts(self) -> list[AccountRow]:
        return [_account(r) for r in await self.pool.fetch(f"SELECT * FROM {self._t('accounts')} ORDER BY name")]

    async def store_tokens(self, conn: Any, name: str, access: bytes, access_expires_at: datetime,
                           refresh: bytes, refresh_expires_at: datetime) -> None:
        await conn.execute(
            f"UPDATE {self._t('accounts')} SET access_token = $2, access_expires_at = $3, refresh_token = $4, "
            "refresh_expires_at = $5, token_problem = NULL, updated_at = now() WHERE name = $1",
            name, access, access_expires_at, refresh, refresh_expires_at,
        )

    async def set_token_problem(self, name: str, problem: str | None, conn: Any = None) -> None:
        await (conn or self.pool).execute(
            f"UPDATE {self._t('accounts')} SET token_problem = $2, updated_at = now() WHERE name = $1", name, problem)

    async def pause(self, name: str, until: datetime, reason: str) -> None:
        await self.pool.execute(
            f"UPDATE {self._t('accounts')} SET paused_until = $2, paused_reason = $3, updated_at = now() "
            "WHERE name = $1", name, until, reason)

    async def set_self_only(self, name: str) -> None:
        await self.pool.execute(
            f"UPDATE {self._t('accounts')} SET self_only = true, updated_at = now() WHERE name = $1", name)

    async def update_account(self, name: str, **fields: Any) -> bool:
        allowed = {"auto_approve", "auto_privacy", "sandbox", "self_only", "paused_until", "paused_reason", "mode"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, 2))
        done = await self.pool.fetchval(
            f"UPDATE {self._t('accounts')} SET {sets}, updated_at = now() WHERE name = $1 RETURNING 1",
            name, *fields.values())
        return done is not None

    async def remove_account(self, name: str) -> bool:
        return await self.pool.fetchval(
            f"DELETE FROM {self._t('accounts')} WHERE name = $1 RETURNING 1", name) is not None

    # ------------------------------------------------------------------ the review queue

    async def add_review(self, conn: Any, row: dict[str, Any]) -> bool:
        """A rendered job joins the queue; False when it is there already (a redelivery)."""
        cols = list(row)
        done = await conn.fetchval(
            f"INSERT INTO {self._t('reviews')} ({', '.join(cols)}) VALUES "
            f"({', '.join(f'${i}' for i in range(1, len(cols) + 1))}) ON CONFLICT (job_id) DO NOTHING RETURNING 1",
            *row.values())
        return done is not None

    async def review(self, job_id: str, conn: Any = None, *, lock: bool = False) -> dict[str, Any] | None:
        sql = f"SELECT * FROM {self._t('reviews')} WHERE job_id = $1" + (" FOR UPDATE" if lock else "")
        row = await (conn or self.pool).fetchrow(sql, job_id)
        return _review(row) if row is not None else None

    async def reviews(self, statuses: Sequence[str], *, newest_first: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        order = "decided_at DESC NULLS LAST, received_at DESC" if newest_first else "received_at, job_id"
        rows = await self.pool.fetch(
            f"SELECT * FROM {self._t('reviews')} WHERE status = ANY($1::text[]) ORDER BY {order} LIMIT $2",
            list(statuses), limit)
        return [_review(r) for r in rows]

    async def update_review(self, conn: Any, job_id: str, **fields: Any) -> None:
        if "post_options" in fields and fields["post_options"] is not None:
            fields["post_options"] = json.dumps(fields["post_options"])
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, 2))
        await (conn or self.pool).execute(
            f"UPDATE {self._t('reviews')} SET {sets}, updated_at = now() WHERE job_id = $1", job_id, *fields.values())

    async def open_of_subject(self, conn: Any, subject: str) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            f"SELECT * FROM {self._t('reviews')} WHERE subject_id = $1 AND status = ANY($2::text[]) FOR UPDATE",
            subject, list(OPEN_STATES))
        return [_review(r) for r in rows]

    async def to_verify(self, now: datetime, limit: int = 20) -> list[dict[str, Any]]:
        """Jobs stopped while their bytes were going up, whose platform outcome is due to be asked."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self._t('reviews')} WHERE verify_post AND (next_attempt_at IS NULL OR next_attempt_at <= $1) "
            "ORDER BY next_attempt_at NULLS FIRST LIMIT $2", now, limit)
        return [_review(r) for r in rows]

    async def claim_due(self, worker: str, now: datetime, lease_until: datetime, limit: int = 4) -> list[str]:
        """Approved, posting or inbox jobs whose next attempt is due and that nobody holds: claimed for
        ``worker`` until ``lease_until`` (a crashed worker's claim runs out; another takes the job)."""
        rows = await self.pool.fetch(
            f"UPDATE {self._t('reviews')} SET claimed_by = $1, claimed_until = $3 WHERE job_id IN ("
            f"  SELECT job_id FROM {self._t('reviews')} WHERE status IN ('approved', 'posting', 'in_inbox') "
            "   AND (next_attempt_at IS NULL OR next_attempt_at <= $2) AND (claimed_until IS NULL OR claimed_until < $2) "
            "   ORDER BY next_attempt_at NULLS FIRST, decided_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING job_id",
            worker, now, lease_until, limit)
        return [r["job_id"] for r in rows]

    async def renew(self, job_id: str, worker: str, until: datetime) -> bool:
        """Keep the claim while working; False when it is no longer this worker's."""
        return await self.pool.fetchval(
            f"UPDATE {self._t('reviews')} SET claimed_until = $3 WHERE job_id = $1 AND claimed_by = $2 RETURNING 1",
            job_id, worker, until) is not None

    async def release(self, job_id: str, worker: str) -> None:
        await self.pool.execute(
            f"UPDATE {self._t('reviews')} SET claimed_by = NULL, claimed_until = NULL "
            "WHERE job_id = $1 AND claimed_by = $2", job_id, worker)

    async def counts(self) -> dict[str, int]:
        rows = await self.pool.fetch(f"SELECT status, count(*) AS n FROM {self._t('reviews')} GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    async def oldest_waiting(self) -> datetime | None:
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            f"SELECT min(received_at) FROM {self._t('reviews')} WHERE status = $1", WAITING)

    async def stalled(self) -> dict[str, int]:
        """Due posts that cannot move, by why (no valid token, paused account, ...)."""
        rows = await self.pool.fetch(
            f"SELECT waiting_for, count(*) AS n FROM {self._t('reviews')} WHERE waiting_for IS NOT NULL "
            "AND status IN ('approved', 'posting', 'in_inbox') GROUP BY waiting_for")
        return {r["waiting_for"]: r["n"] for r in rows}

    # ------------------------------------------------------------------ audit and operators

    async def audit(self, conn: Any, job_id: str | None, actor: str, action: str, detail: dict[str, Any]) -> None:
        await (conn or self.pool).execute(
            f"INSERT INTO {self._t('review_audit')} (job_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
            job_id, actor, action, json.dumps(detail, default=str))

    async def audit_of(self, job_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT at, actor, action, detail FROM {self._t('review_audit')} WHERE job_id = $1 ORDER BY id", job_id)
        return [{"at": r["at"], "actor": r["actor"], "action": r["action"], "detail": json.loads(r["detail"])}
                for r in rows]

    async def add_operator(self, name: str, token_sha256: str) -> bool:
        done = await self.pool.fetchval(
            f"INSERT INTO {self._t('operators')} (name, token_sha256) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256, revoked_at = NULL, created_at = now() "
            "RETURNING 1", name, token_sha256)
        return done is not None

    async def revoke_operator(self, name: str) -> bool:
        return await self.pool.fetchval(
            f"UPDATE {self._t('operators')} SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL RETURNING 1",
            name) is not None

    async def operator(self, token_sha256: str) -> str | None:
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            f"SELECT name FROM {self._t('operators')} WHERE token_sha256 = $1 AND revoked_at IS NULL", token_sha256)

    async def add_session(self, id_sha256: str, operator: str, expires_at: datetime) -> None:
        await self.pool.execute(
            f"INSERT INTO {self._t('review_sessions')} (id_sha256, operator, expires_at) VALUES ($1, $2, $3)",
            id_sha256, operator, expires_at)

    async def session_operator(self, id_sha256: str, now: datetime) -> str | None:
        """The operator of a live session: not ended, not expired, opened with the operator's current
        token (a replaced or revoked token ends its sessions)."""
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            f"SELECT s.operator FROM {self._t('review_sessions')} s JOIN {self._t('operators')} o ON o.name = s.operator "
            "WHERE s.id_sha256 = $1 AND s.ended_at IS NULL AND s.expires_at > $2 AND o.revoked_at IS NULL "
            "AND s.created_at >= o.created_at", id_sha256, now)

    async def end_session(self, id_sha256: str) -> None:
        await self.pool.execute(
            f"UPDATE {self._t('review_sessions')} SET ended_at = coalesce(ended_at, now()) WHERE id_sha256 = $1",
            id_sha256)

    # ------------------------------------------------------------------ takedowns

    async def add_takedowns(self, conn: Any, rows: Iterable[dict[str, Any]]) -> int:
        added = 0
        for r in rows:
            done = await conn.fetchval(
                f"INSERT INTO {self._t('takedowns')} (post_id, job_id, subject_id, account, platform, reason) "
                "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (post_id) DO NOTHING RETURNING 1",
                r["post_id"], r.get("job_id"), r["subject_id"], r.get("account"), r["platform"], r["reason"])
            added += done is not None
        return added

    async def takedowns(self, include_done: bool = False) -> list[asyncpg.Record]:
        where = "" if include_done else "WHERE done_at IS NULL"
        return list(await self.pool.fetch(f"SELECT * FROM {self._t('takedowns')} {where} ORDER BY requested_at, post_id"))

    async def takedown(self, post_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(f"SELECT * FROM {self._t('takedowns')} WHERE post_id = $1", post_id)

    async def takedown_done(self, post_id: str, actor: str, note: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"UPDATE {self._t('takedowns')} SET done_at = coalesce(done_at, now()), done_by = coalesce(done_by, $2), "
            "note = coalesce(note, $3) WHERE post_id = $1 RETURNING *", post_id, actor, note)

    async def takedown_backlog(self) -> int:
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {self._t('takedowns')} WHERE done_at IS NULL"))

    # ------------------------------------------------------------------ posts read back

    async def add_post(self, conn: Any, p: dict[str, Any]) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('posts')} (post_id, job_id, platform, account, dry_run, subject_id, template_id, "
            "arm_id, duration_s, published_at, readable) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
            "ON CONFLICT (post_id) DO NOTHING",
            p["post_id"], p["job_id"], p["platform"], p["account"], p["dry_run"], p["subject_id"], p["template_id"],
            p["arm_id"], p["duration_s"], p["published_at"], p["readable"])

    async def posts_of_subject(self, conn: Any, subject: str) -> list[asyncpg.Record]:
        return list(await conn.fetch(f"SELECT * FROM {self._t('posts')} WHERE subject_id = $1", subject))

    async def readable_posts(self, since: datetime) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(
            f"SELECT * FROM {self._t('posts')} WHERE readable AND published_at >= $1 ORDER BY published_at", since))

    async def mark_polled(self, conn: Any, post_id: str, at: datetime) -> None:
        await (conn or self.pool).execute(
            f"UPDATE {self._t('posts')} SET last_polled_at = $2, polls = polls + 1 WHERE post_id = $1", post_id, at)


def _review(r: asyncpg.Record) -> dict[str, Any]:
    d = dict(r)
    d["template_tags"] = tuple(d["template_tags"] or ())
    d["hashtags"] = tuple(d["hashtags"] or ())
    d["abandoned_publish_ids"] = list(d["abandoned_publish_ids"] or ())
    if d.get("post_options") is not None:
        d["post_options"] = json.loads(d["post_options"])
    return d
