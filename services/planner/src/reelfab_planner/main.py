"""planner service: wiring only (the service shape: docs/architecture.md). bootstrap.py builds the
adapters, usecase.py plans over them, plan.py / candidates.py / policy.py / ledger.py decide,
handlers.py write the outcome in a unit of work. Besides its consumers it runs the schedule (a batch
every REELFAB_PLANNER_SCHEDULE_EVERY_S, off by default) and refreshes the ledger's metrics."""

from __future__ import annotations

import asyncio
import contextlib

from reelfab.consent.view import ConsentView
from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    JOB_FAILED,
    POLICY_UPDATED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SUBJECT_FLAGGED,
    SWAP_COMPLETED,
    SWAP_EXPEDITED,
    SWAP_REQUESTED,
    TREND_DETECTED,
)
from reelfab.logging import get_logger
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from . import handlers, metrics
from .bootstrap import Planner, bootstrap
from .ledger import STATUSES
from .repository import restore_policy
from .usecase import plan_now

SPEC = ServiceSpec(
    name="planner",
    package=__package__ or "reelfab_planner",
    db_schema="planner",
    default_port=8082,
    consumes=(
        CONSENT_CHANGED,
        TREND_DETECTED,
        SWAP_COMPLETED,
        RENDER_COMPLETED,
        PUBLISH_COMPLETED,
        POLICY_UPDATED,
        SUBJECT_FLAGGED,
        JOB_FAILED,
    ),
    produces=(
        SWAP_REQUESTED,
        SWAP_EXPEDITED,
        JOB_FAILED,
    ),
    description="Catalogue, consent view, trends and policy in; swap jobs out; the job ledger.",
)
log = get_logger("reelfab.planner")
LEDGER_METRICS_EVERY_S = 5.0


def wire(ctx: ServiceContext) -> None:
    planner = bootstrap(ctx)
    planner.view.subscribe(ctx.bus)  # a group of its own: every instance reads every lease
    ctx.bus.subscribe(TREND_DETECTED, handlers.on_trend(planner))
    ctx.bus.subscribe(SWAP_COMPLETED, handlers.on_swapped(planner))
    ctx.bus.subscribe(RENDER_COMPLETED, handlers.on_rendered(planner))
    ctx.bus.subscribe(PUBLISH_COMPLETED, handlers.on_published(planner))
    ctx.bus.subscribe(JOB_FAILED, handlers.on_failed(planner))
    ctx.bus.subscribe(POLICY_UPDATED, handlers.on_policy(planner))
    ctx.bus.subscribe(SUBJECT_FLAGGED, handlers.on_flag(planner))
    ctx.extras["planner"] = planner
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        await _catch_up(planner.view, ctx)
        planner.policy = restore_policy(await planner.store.policy())
        tasks.append(asyncio.create_task(_ledger_metrics(planner, stop), name="planner-ledger-metrics"))
        every = ctx.settings.planner_schedule_every_s
        if every > 0:
            tasks.append(asyncio.create_task(_schedule(planner, every, ctx.settings.planner_schedule_count, stop),
                                             name="planner-schedule"))

    async def finish() -> None:
        stop.set()
        for task in tasks:
            await task

    ctx.on_start.append(start)
    ctx.on_stop.append(finish)


async def _catch_up(view: ConsentView, ctx: ServiceContext) -> None:
    await view.catch_up(ctx.bus)  # before the first plan: plan nothing on an empty view


async def _schedule(planner: Planner, every_s: float, count: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            await plan_now(planner, count, "schedule")
        except Exception as exc:  # noqa: BLE001 - the next tick tries again; the failure is logged
            log.error("scheduled plan failed", error=f"{type(exc).__name__}: {exc}")


async def _ledger_metrics(planner: Planner, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            counts = await planner.store.counts(planner.clock())
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the outage is reported elsewhere
            log.debug("ledger metrics skipped", error=str(exc))
        else:
            for status in STATUSES:
                metrics.LEDGER_JOBS.labels(status).set(counts.by_status.get(status, 0))
            metrics.OLDEST_UNFINISHED.set(counts.oldest_unfinished_s or 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LEDGER_METRICS_EVERY_S)


main = entry_point(SPEC, wire)
