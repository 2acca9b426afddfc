"""The publisher's background work, one loop: auto-approvals (accounts that allow them), posting the
approved jobs (poster.advance on jobs claimed with a lease, so replicas never move the same job), the
engagement read-back (readback.py decides when; the Display API or, for dry-run posts, the simulator
answers) and the queue's gauges. Each pass does what is due and sleeps ``publisher_tick_s``: a job
waiting for a token, a pause or the platform has a next_attempt_at, so nothing loops busily."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from reelfab.bus import new_event_id
from reelfab.contracts.generated.records import EngagementObserved
from reelfab.contracts.topics import ENGAGEMENT_OBSERVED
from reelfab.logging import get_logger

from . import metrics, readback
from .accounts import NoValidToken, account_problem
from .bootstrap import Publisher
from .desk import OPEN_STATES
from .poster import advance, verify_stopped
from .review import ReviewDesk
from .tiktok_api import TikTokError, VideoStats

log = get_logger("reelfab.publisher")


class Worker:
    def __init__(self, p: Publisher, desk: ReviewDesk) -> None:
        self.p = p
        self.desk = desk
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # the read-back's scan and the gauges' counts run this often (the first read is minutes away)
        self.slow_every_s = min(15.0, p.settings.publisher_readback_first_s / 10)
        self._slow_at: datetime | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher-worker")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                await self.once()
                failing = False
            except Exception as exc:  # noqa: BLE001 - the database or Kafka is away: try again next tick
                if not failing:
                    log.warning("publisher pass failed; retrying", error=str(exc)[:300])
                failing = True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.p.settings.publisher_tick_s)

    async def once(self) -> None:
        """One pass: what is due now. The read-back (no post is due sooner than first_s after the last
        look) and the gauges are looked at every ``slow_every_s``, not every tick."""
        await self.desk.auto_approve()
        await self.post_due()
        await self.verify_stopped()
        now = self.p.clock()
        if self._slow_at is None or (now - self._slow_at).total_seconds() >= self.slow_every_s:
            self._slow_at = now
            await self.read_back()
            await self.gauges()

    async def post_due(self) -> int:
        now = self.p.clock()
        moved = 0
        jobs = await self.p.repo.claim_due(self.p.worker_id, now, now + timedelta(seconds=self.p.claim_lease_s))

        async def move(job_id: str) -> None:
            nonlocal moved
            heartbeat = asyncio.create_task(self._keep_claim(job_id), name=f"claim-{job_id}")
            try:
                await advance(self.p, job_id)
                moved += 1
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                await self.p.repo.release(job_id, self.p.worker_id)

        # the claimed jobs move side by side: one long upload does not hold up the others' status polls
        results = await asyncio.gather(*(move(j) for j in jobs), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return moved

    async def verify_stopped(self) -> int:
        """Jobs stopped while their bytes went up: ask the platform whether it made the post anyway."""
        n = 0
        for row in await self.p.repo.to_verify(self.p.clock()):
            await verify_stopped(self.p, row)
            n += 1
        return n

    async def _keep_claim(self, job_id: str) -> None:
        """Renew the claim while the job is moved (a chunk of 64 MB can take longer than the lease): a live
        worker never loses its job to another, a killed one's claim runs out."""
        every = self.p.claim_lease_s / 3
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):  # the database away: the claim may lapse; posting stops there too
                until = self.p.clock() + timedelta(seconds=self.p.claim_lease_s)
                if not await self.p.repo.renew(job_id, self.p.worker_id, until):
                    log.error("claim lost while posting", job_id=job_id)

    async def read_back(self) -> int:
        now = self.p.clock()
        horizon = self.p.settings.publisher_readback_horizon_s
        rows = {r["post_id"]: r for r in await self.p.repo.readable_posts(now - timedelta(seconds=horizon))}
        due = readback.due(((r["post_id"], r["published_at"], r["last_polled_at"]) for r in rows.values()), now,
                           first_s=self.p.settings.publisher_readback_first_s,
                           max_s=self.p.settings.publisher_readback_max_s)
        by_account: dict[str, list[Any]] = defaultdict(list)
        sent = 0
        for post_id in due:
            row = rows[post_id]
            if row["dry_run"]:
                sent += await self._announce(row, self._simulated(row, now), "simulator")
            else:
                by_account[row["account"]].append(row)
        for account, posts in by_account.items():
            sent += await self._read_tiktok(account, posts, now)
        return sent

    def _simulated(self, row: Any, now: datetime) -> EngagementObserved:
        reading = self.p.simulator.reading(post_id=row["post_id"], subject_id=row["subject_id"],
                                           template_id=row["template_id"], published_at=row["published_at"], at=now,
                                           duration_s=row["duration_s"])
        return self._record(row, now, views=reading.views, likes=reading.likes, comments=reading.comments,
                            shares=reading.shares, completion_rate=reading.completion_rate,
                            avg_watch_time_s=reading.avg_watch_time_s)

    async def _read_tiktok(self, account: str, posts: list[Any], now: datetime) -> int:
        client = self.p.client
        a = await self.p.repo.account(account)
        if client is None or a is None or account_problem(a, now) is not None:
            return 0
        sent = 0
        for batch in readback.batches([r["post_id"] for r in posts]):
            try:
                stats: list[VideoStats] = await self.p.tokens.call(
                    account, lambda t, b=batch: client.query_videos(t, b))  # type: ignore[misc]
            except (NoValidToken, TikTokError) as exc:
                log.warning("engagement read-back failed", account=account, error=str(exc)[:300])
                return sent
            found = {s.id: s for s in stats}
            for row in posts:
                s = found.get(row["post_id"])
                if s is None:
                    continue
                sent += await self._announce(row, self._record(
                    row, now, views=s.view_count, likes=s.like_count, comments=s.comment_count, shares=s.share_count,
                    completion_rate=None, avg_watch_time_s=None), "tiktok")
        return sent

    def _record(self, row: Any, now: datetime, **counts: Any) -> EngagementObserved:
        return EngagementObserved(
            event_id=new_event_id(), occurred_at=now, producer=self.p.spec.name, post_id=row["post_id"],
            platform=row["platform"], job_id=row["job_id"], subject_id=row["subject_id"],
            template_id=row["template_id"], arm_id=row["arm_id"], observed_at=now, **counts)

    async def _announce(self, row: Any, record: EngagementObserved, source: str) -> int:
        async with self.p.pool.acquire() as conn, conn.transaction():
            await self.p.outbox.add(conn, ENGAGEMENT_OBSERVED, record)
            await self.p.repo.mark_polled(conn, row["post_id"], record.observed_at)
        metrics.READINGS.labels(source).inc()
        return 1

    async def gauges(self) -> None:
        counts = await self.p.repo.counts()
        for status in (*OPEN_STATES, "published", "rejected", "failed", "stopped"):
            metrics.REVIEW_QUEUE.labels(status).set(counts.get(status, 0))
        oldest = await self.p.repo.oldest_waiting()
        metrics.REVIEW_OLDEST.set((self.p.clock() - oldest).total_seconds() if oldest else 0.0)
        stalled = dict.fromkeys(WHY_LABELS, 0)
        for why, n in (await self.p.repo.stalled()).items():
            stalled[_why_label(why)] += n
        for label, n in stalled.items():
            metrics.STALLED.labels(label).set(n)
        now = self.p.clock()
        metrics.ACCOUNTS_WITHOUT_TOKEN.set(sum(
            1 for a in await self.p.repo.accounts()
            if a.platform == "tiktok" and (account_problem(a, now) or "").startswith("no valid token")))
        metrics.TAKEDOWN_BACKLOG.set(await self.p.repo.takedown_backlog())


WHY = ("no valid token", "paused", "rate limited", "processing", "inbox", "retrying", "no TikTok client")
WHY_LABELS = (*(k.replace(" ", "_") for k in WHY), "other")


def _why_label(why: str) -> str:
    """A bounded label for the stalled gauge (the text itself can name accounts and times)."""
    for key in WHY:
        if key in why:
            return key.replace(" ", "_")
    return "other"
