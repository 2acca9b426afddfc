"""The analytics tables (migrations/0001): posts, readings, contributions, arms, space changes and
versions, strikes, flags and the rules' audit. Every write of a handler goes through the unit of
work's connection (``conn``), in the transaction that marks the event processed, so a redelivery
changes nothing; the in-memory twin serves the unit tests (``conn`` is None there).

Concurrency (PostgreSQL): a post's row is locked for the whole transaction (a reading and its
publish.completed, on differently keyed topics, may be handled at once); arms are updated in (space,
arm) order by ``arm = arm + delta`` upserts; a flag's row is locked before its rule counts, so two
strikes handled at once are counted by one decision after the other. A change to a space is an
inserted row (``space_changes``), never an update of a shared row, so handlers do not queue behind
each other; the flusher takes the changes it saw under an advisory lock, publishes, and deletes
exactly those rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from reelfab.contracts.arms import ARM_SPACES
from reelfab.db import check_schema_name

from .policy import SPACES_OF_KIND, ArmState, Disabled, SpaceSnapshot, space_arms
from .posteriors import ArmDelta, ArmStats, Contribution
from .posts import PUBLISH, Lineage, Observation, Post
from .rules import DISABLED, Flag, Strike


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    rule: str
    kind: str
    target_id: str
    action: str
    reason: str
    evidence: dict[str, Any]
    event_id: str | None


@dataclass(frozen=True)
class Standings:
    """Everything the report shows: each space's arms, versions, current flags and post counts."""

    spaces: dict[str, tuple[ArmState, ...]]
    versions: dict[str, int]
    flags: dict[tuple[str, str], str]  # (kind, target) -> action, flagged ones only
    posts: int
    unattributed: int


class Repository(Protocol):
    async def lock_post(self, conn: Any, post_id: str) -> Post:
        """The post (a blank one when new), locked until the transaction ends."""

    async def save_post(self, conn: Any, post: Post) -> None: ...
    async def add_observation(self, conn: Any, observation: Observation) -> None: ...
    async def contribution(self, conn: Any, post_id: str) -> Contribution | None: ...
    async def set_contribution(self, conn: Any, post_id: str, contribution: Contribution | None) -> None: ...

    async def apply(self, conn: Any, deltas: Sequence[ArmDelta]) -> None:
        """Add ``deltas`` to the arms and note their spaces as changed (for the flusher)."""

    async def arm(self, conn: Any, space: str, arm_id: str) -> ArmStats: ...

    async def lineage_of_job(self, conn: Any, job_id: str) -> Lineage | None:
        """The lineage of the job's post, when one is known."""

    async def lock_flag(self, conn: Any, kind: str, target_id: str) -> str | None:
        """The target's current flag action (None: never flagged), locked until the transaction ends."""

    async def add_strike(self, conn: Any, strike: Strike) -> None: ...

    async def strikes_near(self, conn: Any, kind: str, target_id: str, since: datetime,
                           until: datetime) -> list[Strike]:
        """Every strike against the target of the jobs struck against it between ``since`` and
        ``until``, their failures outside that span too (a job counts once, at its first failure:
        rules.py), in time order."""

    async def record_flag(self, conn: Any, flag: Flag, *, actor: str, event_id: str | None) -> None:
        """The target's new flag, its audit entry, and (when what is disabled changes) its spaces as changed."""

    async def take_changes(self, conn: Any) -> list[SpaceSnapshot]:
        """The changed spaces, each with its next version, and forget those changes (the caller
        publishes them in the same transaction)."""

    async def counts(self) -> tuple[int, int]:
        """(posts tracked, posts without a lineage yet)."""

    async def standings(self) -> Standings: ...
    async def audit(self, limit: int = 50) -> list[AuditEntry]: ...


def _post_of(row: Any) -> Post:
    lineage = None if row["lineage"] is None else Lineage(
        row["job_id"], row["subject_id"], row["template_id"], row["arm_id"], row["lineage"])
    return Post(row["post_id"], lineage, row["platform"], row["published_at"], row["observed_at"], row["reward"],
                float(row["trials"]))


def _stats_of(row: Any) -> ArmStats:
    return ArmStats(int(row["pulls"]), float(row["successes"]), float(row["failures"]))


_POST_COLUMNS = ("post_id, platform, job_id, subject_id, template_id, arm_id, lineage, published_at, observed_at, "
                 "reward, trials")


class PostgresRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self._flush_lock = int.from_bytes(hashlib.sha256(f"policy-flush:{schema}".encode()).digest()[:8], "big",
                                          signed=True)

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    async def lock_post(self, conn: Any, post_id: str) -> Post:
        await conn.execute(f"INSERT INTO {self._t('posts')} (post_id) VALUES ($1) ON CONFLICT DO NOTHING", post_id)
        row = await conn.fetchrow(f"SELECT {_POST_COLUMNS} FROM {self._t('posts')} WHERE post_id = $1 FOR UPDATE",
                                  post_id)
        return _post_of(row)

    async def save_post(self, conn: Any, post: Post) -> None:
        lin = post.lineage
        await conn.execute(
            f"UPDATE {self._t('posts')} SET platform = $2, job_id = $3, subject_id = $4, template_id = $5, "
            "arm_id = $6, lineage = $7, published_at = $8, observed_at = $9, reward = $10, trials = $11, "
            "updated_at = now() WHERE post_id = $1",
            post.post_id, post.platform, lin and lin.job_id, lin and lin.subject_id, lin and lin.template_id,
            lin and lin.arm_id, lin and lin.source, post.published_at, post.observed_at, post.reward, post.trials)

    async def add_observation(self, conn: Any, o: Observation) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('observations')} (event_id, post_id, observed_at, views, likes, comments, shares, "
            "avg_watch_time_s, completion_rate, reward, trials) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
            "ON CONFLICT DO NOTHING",
            o.event_id, o.post_id, o.observed_at, o.views, o.likes, o.comments, o.shares, o.avg_watch_time_s,
            o.completion_rate, o.reward, o.trials)

    async def contribution(self, conn: Any, post_id: str) -> Contribution | None:
        rows = await conn.fetch(
            f"SELECT space, arm_id, reward, trials FROM {self._t('contributions')} WHERE post_id = $1", post_id)
        if not rows:
            return None
        return Contribution({r["space"]: r["arm_id"] for r in rows}, float(rows[0]["reward"]), float(rows[0]["trials"]))

    async def set_contribution(self, conn: Any, post_id: str, contribution: Contribution | None) -> None:
        await conn.execute(f"DELETE FROM {self._t('contributions')} WHERE post_id = $1", post_id)
        if contribution is not None:
            await conn.executemany(
                f"INSERT INTO {self._t('contributions')} (post_id, space, arm_id, reward, trials) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(post_id, space, arm, contribution.reward, contribution.trials)
                 for space, arm in sorted(contribution.arms.items())])

    async def apply(self, conn: Any, deltas: Sequence[ArmDelta]) -> None:
        if not deltas:
            return
        await conn.executemany(
            f"INSERT INTO {self._t('arms')} AS a (space, arm_id, pulls, successes, failures) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (space, arm_id) DO UPDATE SET pulls = a.pulls + excluded.pulls, "
            "successes = a.successes + excluded.successes, failures = a.failures + excluded.failures, "
            "updated_at = now()",
            [(d.space, d.arm_id, d.pulls, d.successes, d.failures)
             for d in sorted(deltas, key=lambda d: (d.space, d.arm_id))])
        await self._changed(conn, {d.space for d in deltas})

    async def _changed(self, conn: Any, spaces: Iterable[str]) -> None:
        await conn.executemany(f"INSERT INTO {self._t('space_changes')} (space) VALUES ($1)",
                               [(s,) for s in sorted(set(spaces))])

    async def arm(self, conn: Any, space: str, arm_id: str) -> ArmStats:
        row = await conn.fetchrow(
            f"SELECT pulls, successes, failures FROM {self._t('arms')} WHERE space = $1 AND arm_id = $2", space, arm_id)
        return ArmStats() if row is None else _stats_of(row)

    async def lineage_of_job(self, conn: Any, job_id: str) -> Lineage | None:
        row = await conn.fetchrow(
            f"SELECT {_POST_COLUMNS} FROM {self._t('posts')} WHERE job_id = $1 AND lineage IS NOT NULL "
            "ORDER BY lineage = 'publish' DESC, published_at LIMIT 1", job_id)
        return None if row is None else _post_of(row).lineage

    async def lock_flag(self, conn: Any, kind: str, target_id: str) -> str | None:
        await conn.execute(f"INSERT INTO {self._t('flags')} (kind, target_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           kind, target_id)
        action: str | None = await conn.fetchval(
            f"SELECT action FROM {self._t('flags')} WHERE kind = $1 AND target_id = $2 FOR UPDATE", kind, target_id)
        return action

    async def add_strike(self, conn: Any, s: Strike) -> None:
        await conn.execute(
            f"INSERT INTO {self._t('strikes')} (event_id, kind, target_id, job_id, reason_code, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            s.event_id, s.kind, s.target_id, s.job_id, s.reason_code, s.occurred_at)

    async def forget_strikes(self, conn: Any, kind: str, target_id: str) -> None:
        """An operator cleared the target: its strikes so far no longer count (the audit keeps them)."""
        await conn.execute(f"DELETE FROM {self._t('strikes')} WHERE kind = $1 AND target_id = $2", kind, target_id)

    async def strikes_near(self, conn: Any, kind: str, target_id: str, since: datetime,
                           until: datetime) -> list[Strike]:
        strikes = self._t('strikes')
        rows = await conn.fetch(
            f"SELECT event_id, kind, target_id, job_id, reason_code, occurred_at FROM {strikes} "
            f"WHERE kind = $1 AND target_id = $2 AND job_id IN (SELECT job_id FROM {strikes} "
            "WHERE kind = $1 AND target_id = $2 AND occurred_at BETWEEN $3 AND $4) ORDER BY occurred_at, event_id",
            kind, target_id, since, until)
        return [Strike(r["event_id"], r["kind"], r["target_id"], r["job_id"], r["reason_code"], r["occurred_at"])
                for r in rows]

    async def record_flag(self, conn: Any, flag: Flag, *, actor: str, event_id: str | None) -> None:
        before = await conn.fetchval(
            f"SELECT action FROM {self._t('flags')} WHERE kind = $1 AND target_id = $2", flag.kind, flag.target_id)
        await conn.execute(
            f"INSERT INTO {self._t('flags')} AS f (kind, target_id, action, reason) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (kind, target_id) DO UPDATE SET action = excluded.action, reason = excluded.reason, "
            "changed_at = now()", flag.kind, flag.target_id, flag.action, flag.reason)
        await conn.execute(
            f"INSERT INTO {self._t('rule_audit')} (actor, rule, kind, target_id, action, reason, evidence, event_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
            actor, flag.rule, flag.kind, flag.target_id, flag.action, flag.reason, flag.evidence_json, event_id)
        if (before == DISABLED) != (flag.action == DISABLED):
            await self._changed(conn, SPACES_OF_KIND[flag.kind])

    async def take_changes(self, conn: Any) -> list[SpaceSnapshot]:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._flush_lock)  # one flusher at a time
        changes = await conn.fetch(f"SELECT id, space FROM {self._t('space_changes')} ORDER BY id")
        if not changes:
            return []
        # read after the changes: every change seen is committed, so its arms are in what follows
        disabled = Disabled.of([(r["kind"], r["target_id"]) for r in await conn.fetch(
            f"SELECT kind, target_id FROM {self._t('flags')} WHERE action = $1", DISABLED)])
        snapshots = []
        for space in sorted({r["space"] for r in changes}):
            version = await conn.fetchval(
                f"INSERT INTO {self._t('spaces')} AS s (space, policy_version) VALUES ($1, 1) ON CONFLICT (space) "
                "DO UPDATE SET policy_version = s.policy_version + 1, published_at = now() RETURNING policy_version",
                space)
            stats = {r["arm_id"]: _stats_of(r) for r in await conn.fetch(
                f"SELECT arm_id, pulls, successes, failures FROM {self._t('arms')} WHERE space = $1", space)}
            snapshots.append(SpaceSnapshot(space, int(version), space_arms(space, stats, disabled)))
        await conn.execute(f"DELETE FROM {self._t('space_changes')} WHERE id = ANY($1::bigint[])",
                           [r["id"] for r in changes])
        return snapshots

    async def counts(self) -> tuple[int, int]:
        row = await self.pool.fetchrow(
            f"SELECT count(*) AS posts, count(*) FILTER (WHERE lineage IS NULL) AS unattributed FROM {self._t('posts')}")
        return int(row["posts"]), int(row["unattributed"])

    async def standings(self) -> Standings:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            flags = {(r["kind"], r["target_id"]): r["action"] for r in await conn.fetch(
                f"SELECT kind, target_id, action FROM {self._t('flags')} WHERE action IS NOT NULL")}
            disabled = Disabled.of([k for k, a in flags.items() if a == DISABLED])
            stats: dict[str, dict[str, ArmStats]] = {}
            for r in await conn.fetch(f"SELECT space, arm_id, pulls, successes, failures FROM {self._t('arms')}"):
                stats.setdefault(r["space"], {})[r["arm_id"]] = _stats_of(r)
            versions = {r["space"]: int(r["policy_version"]) for r in await conn.fetch(
                f"SELECT space, policy_version FROM {self._t('spaces')}")}
            row = await conn.fetchrow(
                f"SELECT count(*) AS posts, count(*) FILTER (WHERE lineage IS NULL) AS unattributed FROM {self._t('posts')}")
        return _standings(stats, disabled, versions, flags, int(row["posts"]), int(row["unattributed"]))

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        rows = await self.pool.fetch(
            f"SELECT at, actor, rule, kind, target_id, action, reason, evidence, event_id FROM {self._t('rule_audit')} "
            "ORDER BY id DESC LIMIT $1", limit)
        return [AuditEntry(r["at"], r["actor"], r["rule"], r["kind"], r["target_id"], r["action"], r["reason"],
                           json.loads(r["evidence"]), r["event_id"]) for r in rows]


def _standings(stats: dict[str, dict[str, ArmStats]], disabled: Disabled, versions: dict[str, int],
               flags: dict[tuple[str, str], str], posts: int, unattributed: int) -> Standings:
    spaces = {s: space_arms(s, stats.get(s, {}), disabled) for s in ARM_SPACES}
    spaces.update({s: space_arms(s, a, disabled) for s, a in stats.items() if s not in spaces})
    return Standings(spaces, versions, flags, posts, unattributed)


@dataclass
class InMemoryRepository:
    """The tables in dictionaries, for broker-free tests; ``conn`` is ignored."""

    posts: dict[str, Post] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    contributions: dict[str, Contribution] = field(default_factory=dict)
    arms: dict[tuple[str, str], ArmStats] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)
    strikes: dict[tuple[str, str], Strike] = field(default_factory=dict)
    flags: dict[tuple[str, str], str | None] = field(default_factory=dict)
    audit_log: list[AuditEntry] = field(default_factory=list)

    async def lock_post(self, conn: Any, post_id: str) -> Post:
        return self.posts.setdefault(post_id, Post(post_id))

    async def save_post(self, conn: Any, post: Post) -> None:
        self.posts[post.post_id] = post

    async def add_observation(self, conn: Any, observation: Observation) -> None:
        self.observations.append(observation)

    async def contribution(self, conn: Any, post_id: str) -> Contribution | None:
        return self.contributions.get(post_id)

    async def set_contribution(self, conn: Any, post_id: str, contribution: Contribution | None) -> None:
        if contribution is None:
            self.contributions.pop(post_id, None)
        else:
            self.contributions[post_id] = contribution

    async def apply(self, conn: Any, deltas: Sequence[ArmDelta]) -> None:
        for d in deltas:
            now = self.arms.get((d.space, d.arm_id), ArmStats())
            self.arms[(d.space, d.arm_id)] = ArmStats(now.pulls + d.pulls, now.successes + d.successes,
                                                      now.failures + d.failures)
            self.changed.add(d.space)

    async def arm(self, conn: Any, space: str, arm_id: str) -> ArmStats:
        return self.arms.get((space, arm_id), ArmStats())

    async def lineage_of_job(self, conn: Any, job_id: str) -> Lineage | None:
        found = [p.lineage for p in self.posts.values() if p.lineage is not None and p.lineage.job_id == job_id]
        found.sort(key=lambda lin: lin.source != PUBLISH)
        return found[0] if found else None

    async def lock_flag(self, conn: Any, kind: str, target_id: str) -> str | None:
        return self.flags.setdefault((kind, target_id), None)

    async def add_strike(self, conn: Any, strike: Strike) -> None:
        self.strikes.setdefault((strike.event_id, strike.kind), strike)

    async def strikes_near(self, conn: Any, kind: str, target_id: str, since: datetime,
                           until: datetime) -> list[Strike]:
        mine = [s for s in self.strikes.values() if s.kind == kind and s.target_id == target_id]
        jobs = {s.job_id for s in mine if since <= s.occurred_at <= until}
        return sorted((s for s in mine if s.job_id in jobs), key=lambda s: (s.occurred_at, s.event_id))

    async def record_flag(self, conn: Any, flag: Flag, *, actor: str, event_id: str | None) -> None:
        before = self.flags.get((flag.kind, flag.target_id))
        self.flags[(flag.kind, flag.target_id)] = flag.action
        self.audit_log.append(AuditEntry(datetime.now().astimezone(), actor, flag.rule, flag.kind, flag.target_id,
                                         flag.action, flag.reason, json.loads(flag.evidence_json), event_id))
        if (before == DISABLED) != (flag.action == DISABLED):
            self.changed.update(SPACES_OF_KIND[flag.kind])

    def _disabled(self) -> Disabled:
        return Disabled.of([k for k, a in self.flags.items() if a == DISABLED])

    def _stats(self) -> dict[str, dict[str, ArmStats]]:
        stats: dict[str, dict[str, ArmStats]] = {}
        for (space, arm), s in self.arms.items():
            stats.setdefault(space, {})[arm] = s
        return stats

    async def take_changes(self, conn: Any) -> list[SpaceSnapshot]:
        disabled, stats = self._disabled(), self._stats()
        snapshots = []
        for space in sorted(self.changed):
            self.versions[space] = self.versions.get(space, 0) + 1
            snapshots.append(SpaceSnapshot(space, self.versions[space], space_arms(space, stats.get(space, {}), disabled)))
        self.changed.clear()
        return snapshots

    async def counts(self) -> tuple[int, int]:
        return len(self.posts), sum(1 for p in self.posts.values() if p.lineage is None)

    async def standings(self) -> Standings:
        posts, unattributed = await self.counts()
        flags = {k: a for k, a in self.flags.items() if a is not None}
        return _standings(self._stats(), self._disabled(), dict(self.versions), flags, posts, unattributed)

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        return list(reversed(self.audit_log))[:limit]
