"""The policy flusher: every ``analytics_policy_flush_s`` it publishes the arm spaces that changed
since its last look — one PolicyUpdated per space, the whole space, its version one higher — so a
burst of engagement becomes one policy update per space per batch, not one per reading.

With PostgreSQL, taking the changes, bumping the versions and writing the records to the outbox is
one transaction (the outbox relay sends them): a crash loses nothing and publishes nothing twice.
Without a pool (broker-free tests, the in-memory bus) it publishes on the bus directly. It also keeps
the posts gauges current (a count over the tables, every ``gauges_every_s``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg

from reelfab.bus import Bus, new_event_id
from reelfab.bus.outbox import Outbox
from reelfab.contracts.generated.records import PolicyUpdated
from reelfab.contracts.topics import POLICY_UPDATED
from reelfab.errors import MessageTooLargeError
from reelfab.logging import get_logger

from . import metrics
from .bootstrap import Analytics
from .policy import SpaceSnapshot, policy_record, trimmed

log = get_logger("reelfab.analytics")


class PolicyFlusher:
    def __init__(self, analytics: Analytics, *, pool: asyncpg.Pool | None, outbox: Outbox, bus: Bus,
                 interval_s: float, gauges_every_s: float = 15.0) -> None:
        self.analytics = analytics
        self.pool = pool
        self.outbox = outbox
        self.bus = bus
        self.interval_s = interval_s
        self.gauges_every_s = gauges_every_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gauges_at = float("-inf")
        self._failing = False

    async def flush(self) -> list[PolicyUpdated]:
        """Publish every changed space now; returns what was published (committed to the outbox)."""
        if self.pool is None:
            records = self._records(await self.analytics.repo.take_changes(None))
            for record in records:
                await self.bus.publish(POLICY_UPDATED, record)
        else:
            async with self.pool.acquire() as conn, conn.transaction():
                records = self._records(await self.analytics.repo.take_changes(conn))
                for record in records:
                    await self.outbox.add(conn, POLICY_UPDATED, record)
        for record in records:
            metrics.POLICY_PUBLICATIONS.labels(record.arm_space).inc()
            metrics.POLICY_VERSION.labels(record.arm_space).set(record.policy_version)
            metrics.LEADERBOARD.update(record.arm_space, record.arms)
        if records:
            log.info("policy published", spaces={r.arm_space: r.policy_version for r in records})
        return records

    def _records(self, snapshots: list[SpaceSnapshot]) -> list[PolicyUpdated]:
        now = self.analytics.clock()
        return [self._fitting(s, now) for s in snapshots]

    def _fitting(self, snapshot: SpaceSnapshot, now: Any) -> PolicyUpdated:
        """The space's record, cut to the arms that fit in one message when all of them do not (a
        record too large would stop every later publication of the policy, not just this one)."""
        keep = len(snapshot.arms)
        while True:
            cut = trimmed(snapshot, keep) if keep < len(snapshot.arms) else snapshot
            record = policy_record(cut, self.analytics.prior, event_id=new_event_id(), now=now,
                                   producer=self.analytics.spec.name)
            try:
                self.bus.encode(POLICY_UPDATED, record)
            except MessageTooLargeError:
                if keep == 0:  # nothing left to cut but disabled arms
                    raise
                keep = keep * 4 // 5
                continue
            if len(cut.arms) < len(snapshot.arms):
                metrics.POLICY_ARMS_LEFT_OUT.labels(snapshot.space).set(len(snapshot.arms) - len(cut.arms))
                log.warning("policy space too large for one message: the arms with the fewest posts left out",
                            space=snapshot.space, arms=len(snapshot.arms), published=len(cut.arms))
            else:
                metrics.POLICY_ARMS_LEFT_OUT.labels(snapshot.space).set(0)
            return record

    async def refresh_gauges(self) -> None:
        posts, unattributed = await self.analytics.repo.counts()
        metrics.POSTS_TRACKED.set(posts)
        metrics.POSTS_UNATTRIBUTED.set(unattributed)

    async def tick(self) -> None:
        """One round: flush, and the gauges when they are due. A failure (the database away) is logged
        once per outage and tried again next round: the changes wait in their table."""
        try:
            await self.flush()
            if time.monotonic() - self._gauges_at >= self.gauges_every_s:
                await self.refresh_gauges()
                self._gauges_at = time.monotonic()
        except Exception as exc:  # anything: the next round tries again
            if not self._failing:
                log.warning("policy flush failed; trying again", error=f"{type(exc).__name__}: {exc}")
            self._failing = True
        else:
            if self._failing:
                log.info("policy flush works again")
            self._failing = False

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def start(self) -> None:
        """A service's on_start hook: the flusher runs in the background until ``stop``."""
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name="analytics-policy-flusher")

    async def stop(self) -> None:
        """A service's on_stop hook: stop, after a last flush (with PostgreSQL its records wait in the
        outbox for the next relay if this one has stopped)."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.tick()


def flusher_of(extras: dict[str, Any]) -> PolicyFlusher:
    found = extras["policy_flusher"]
    assert isinstance(found, PolicyFlusher)
    return found
