"""The I/O around the retention policy: read the jobs' ends from the terminal topics, list and
delete objects of the store, prune the delivery tables, and keep the storage gauges current."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from reelfab import metrics
from reelfab.bus.base import Bus
from reelfab.bus.idempotency import prune_processed
from reelfab.bus.outbox import prune_outbox
from reelfab.contracts.topics import JOB_FAILED, PUBLISH_COMPLETED, RENDER_COMPLETED
from reelfab.db import MigrationError, check_schema_name
from reelfab.errors import ObjectRefused, ReelfabError, StackError
from reelfab.identifiers import InvalidIdentifier, check_identifier
from reelfab.storage import ObjectInfo

from .policy import (
    KINDS,
    PROTECTED_PREFIXES,
    Deletion,
    JobState,
    RetentionPlan,
    RetentionPolicy,
    Terminal,
    TerminalEvent,
    Usage,
    fold_terminal_events,
    measure,
    plan_retention,
)

TERMINAL_TOPICS: dict[str, Terminal] = {
    RENDER_COMPLETED: "rendered",
    PUBLISH_COMPLETED: "published",
    JOB_FAILED: "failed",
}


class ListableStore(Protocol):
    """What retention needs of a store (``reelfab.storage.FileStore`` has it)."""

    def list_objects(self, prefix: str = "") -> list[ObjectInfo]: ...
    def stat_key(self, key: str) -> ObjectInfo | None: ...
    def delete_key(self, key: str) -> int: ...


# -- the store ---------------------------------------------------------------------------------


def update_gauges(usage: Usage) -> None:
    for kind, u in usage.by_kind.items():
        metrics.STORAGE_BYTES.labels(kind).set(u.bytes)
        metrics.STORAGE_OBJECTS.labels(kind).set(u.objects)


def store_usage(store: ListableStore) -> Usage:
    """Bytes and objects per kind; the gauges follow."""
    usage = measure(store.list_objects())
    update_gauges(usage)
    return usage


@dataclass
class Applied:
    deleted: list[Deletion] = field(default_factory=list)
    skipped: list[tuple[Deletion, str]] = field(default_factory=list)
    freed_bytes: int = 0


def apply_plan(store: ListableStore, deletions: Iterable[Deletion]) -> Applied:
    """Delete what the plan says, unless the object changed since it was listed (rewritten by a
    redelivery, say): then it stays for the next run to judge. consent/ is refused here again."""
    done = Applied()
    for d in deletions:
        if d.key.startswith(PROTECTED_PREFIXES):
            raise ObjectRefused(f"retention never deletes {d.key!r}: consent objects are the registry's")
        now = store.stat_key(d.key)
        if now is None:
            done.skipped.append((d, "already gone"))
            continue
        if now.mtime != d.mtime or now.size != d.size:
            done.skipped.append((d, "changed since it was listed"))
            continue
        freed = store.delete_key(d.key)
        done.deleted.append(d)
        done.freed_bytes += freed
        metrics.RETENTION_DELETED_BYTES.labels(d.kind).inc(freed)
    return done


# -- the jobs' ends, from the topics --------------------------------------------------------------


@dataclass
class JobScan:
    jobs: dict[str, JobState]
    events: int
    unreadable: int


async def scan_job_states(bus: Bus, since: datetime) -> JobScan:
    """Each job's terminal events since ``since`` on the render, publish and failure topics.

    A message that does not decode, or names no valid job id, is counted and ignored: a job it
    might have ended keeps its objects (the safe side)."""
    events: list[TerminalEvent] = []
    unreadable = 0
    for topic, terminal in TERMINAL_TOPICS.items():
        try:
            messages = await bus.scan(topic, since)
        except ReelfabError:
            raise
        except Exception as exc:  # the broker away: decide nothing without the jobs' states
            raise StackError(f"could not read {topic} ({type(exc).__name__}: {exc}); nothing was pruned") from exc
        for msg in messages:
            try:
                value = bus.codec.decode(msg.value, topic=topic).value
                job_id = check_identifier(str(value["job_id"]), "job_id")
                at = _as_utc(value.get("occurred_at"), msg.timestamp_ms)
            except (ReelfabError, InvalidIdentifier, KeyError, TypeError, ValueError):
                unreadable += 1
                continue
            events.append(TerminalEvent(job_id, terminal, at))
    return JobScan(fold_terminal_events(events), len(events), unreadable)


def _as_utc(value: Any, fallback_ms: int | None) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    if fallback_ms is not None:
        return datetime.fromtimestamp(fallback_ms / 1000, UTC)
    raise ValueError("no time on the event")


# -- the delivery tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryTables:
    schema: str
    outbox: bool
    processed_events: bool


async def delivery_schemas(pool: asyncpg.Pool) -> list[DeliveryTables]:
    """The schemas holding the delivery tables (an outbox with published_at, processed_events
    with processed_at), in name order; names the project would not create are left out."""
    rows = await pool.fetch(
        "SELECT table_schema, table_name FROM information_schema.columns "
        "WHERE (table_name = 'outbox' AND column_name = 'published_at') "
        "   OR (table_name = 'processed_events' AND column_name = 'processed_at')"
    )
    found: dict[str, set[str]] = {}
    for r in rows:
        try:
            check_schema_name(r["table_schema"])
        except MigrationError:
            continue
        found.setdefault(r["table_schema"], set()).add(r["table_name"])
    return [DeliveryTables(s, "outbox" in t, "processed_events" in t) for s, t in sorted(found.items())]


@dataclass(frozen=True)
class RowsPruned:
    schema: str
    table: str
    rows: int


async def prune_delivery_rows(
    pool: asyncpg.Pool, older_than: datetime, *, schemas: Iterable[str] | None = None, dry_run: bool = True
) -> list[RowsPruned]:
    """Published outbox rows and processed-event marks older than ``older_than``, in every schema
    that has them (or only in ``schemas``)."""
    wanted = set(schemas) if schemas is not None else None
    out: list[RowsPruned] = []
    for t in await delivery_schemas(pool):
        if wanted is not None and t.schema not in wanted:
            continue
        if t.outbox:
            out.append(RowsPruned(t.schema, "outbox", await prune_outbox(pool, t.schema, older_than, dry_run=dry_run)))
        if t.processed_events:
            n = await prune_processed(pool, t.schema, older_than, dry_run=dry_run)
            out.append(RowsPruned(t.schema, "processed_events", n))
    return out


# -- one run ------------------------------------------------------------------------------------


@dataclass
class PruneReport:
    now: datetime
    applied: bool
    plan: RetentionPlan
    scan: JobScan
    done: Applied
    rows: list[RowsPruned]

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "applied": self.applied,
            "jobs_seen": len(self.scan.jobs),
            "terminal_events": self.scan.events,
            "unreadable_events": self.scan.unreadable,
            "usage_before": self.plan.usage.as_dict(),
            "to_delete": self.plan.freed.as_dict(),
            "deleted_bytes": self.done.freed_bytes,
            "objects": [
                {"key": d.key, "kind": d.kind, "bytes": d.size, "job_id": d.job_id, "reason": d.reason}
                for d in self.plan.deletions
            ],
            "skipped": [{"key": d.key, "why": why} for d, why in self.done.skipped],
            "rows": [{"schema": r.schema, "table": r.table, "rows": r.rows} for r in self.rows],
        }


async def prune(
    *,
    store: ListableStore,
    bus: Bus,
    pool: asyncpg.Pool | None,
    policy: RetentionPolicy,
    redelivery_horizon: timedelta,
    now: datetime,
    apply: bool,
    scan_since: datetime | None = None,
    schemas: Iterable[str] | None = None,
) -> PruneReport:
    """Plan (and with ``apply``, carry out) one retention run at ``now``.

    The jobs' states are read first: if the topics cannot be read, nothing is deleted."""
    scan = await scan_job_states(bus, scan_since or (now - policy.orphan_age))
    plan = plan_retention(store.list_objects(), scan.jobs, now, policy)
    done = apply_plan(store, plan.deletions) if apply else Applied()
    rows: list[RowsPruned] = []
    if pool is not None:
        rows = await prune_delivery_rows(pool, now - redelivery_horizon, schemas=schemas, dry_run=not apply)
    if apply:
        store_usage(store)  # what is left, as listed now
    else:
        update_gauges(plan.usage)
    return PruneReport(now, apply, plan, scan, done, rows)


__all__ = ["KINDS", "TERMINAL_TOPICS", "prune", "store_usage", "scan_job_states", "apply_plan",
           "delivery_schemas", "prune_delivery_rows", "PruneReport", "ListableStore"]
