"""The planner's workflows over its adapters: gather what a plan reads, plan (off the event loop), and
write the plan — ledger rows and one swap job per pick (expedited when urgent) — in the caller's unit
of work. A plan made on the planner's own initiative (the schedule, `reelfab plan`) opens its unit of
work on a ``PlanCommand`` whose id is the plan's, so a plan commits once."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reelfab.bus import Event
from reelfab.bus.unit_of_work import Transaction
from reelfab.consent.images import image_ref
from reelfab.contracts.arms import MUSIC, NO_MUSIC, STYLE, SUBJECT, SUBJECT_TEMPLATE, TEMPLATE, pair_arm
from reelfab.contracts.records import TrendDetected
from reelfab.contracts.topics import SWAP_EXPEDITED, SWAP_REQUESTED
from reelfab.errors import PermanentError
from reelfab.logging import get_logger

from . import metrics
from .bootstrap import Planner
from .limits import MAX_BATCH, MAX_TREND_TAGS
from .plan import Inputs, Plan, PlanRequest, TrendAsk, plan_batch, swap_requested
from .repository import job_row

log = get_logger("reelfab.planner")
PLAN_TOPIC = "planner.plan"  # not a Kafka topic: the processed-event mark of a plan the planner made itself


@dataclass(frozen=True)
class PlanCommand:
    event_id: str  # the plan's id


def plan_event(plan_id: str) -> Event[PlanCommand]:
    return Event(PlanCommand(plan_id), PLAN_TOPIC, plan_id, -1, -1, 1)


def plannable(planner: Planner) -> dict[str, Any]:
    """The consent view's subjects the planner may plan: all, or only REELFAB_PLANNER_SUBJECTS's."""
    only = planner.config.subjects
    return {k: v for k, v in planner.view.latest.items() if only is None or k in only}


async def gather(planner: Planner, now: datetime) -> Inputs:
    return Inputs(
        terms=plannable(planner), suspect=dict(planner.view.suspect),
        templates=await planner.catalogue.templates(), music=await planner.catalogue.music(), styles=planner.styles,
        policy=planner.policy, produced=await planner.store.produced(), disabled=await planner.store.disabled(),
        planned_today=await planner.store.planned_today(now),
    )


async def make_plan(planner: Planner, request: PlanRequest, trigger: str) -> Plan:
    started = time.perf_counter()
    inputs = await gather(planner, request.now)
    plan = await asyncio.to_thread(plan_batch, request, inputs, planner.config)
    metrics.PLAN_SECONDS.observe(time.perf_counter() - started)
    metrics.CANDIDATES.set(plan.candidates)
    metrics.PLANS.labels(trigger, "planned" if plan.jobs else "empty").inc()
    return plan


async def write_plan(planner: Planner, tx: Transaction, plan: Plan, trigger: str, asked: int) -> None:
    now = planner.clock()
    rows = [job_row(job, plan, trigger, now) for job in plan.jobs]
    await planner.store.add_plan(tx.conn, plan, trigger, asked, rows, now)
    for job in plan.jobs:
        record = swap_requested(job, plan, config=planner.config, producer=planner.spec.name, event_id=planner.new_id(),
                                occurred_at=now, template_uri=job.template.uri,
                                source_image_uri=image_ref(job.subject.subject_id, job.subject.image_sha256))
        lane = "expedited" if job.priority > 0 else "normal"
        await tx.publish(SWAP_EXPEDITED if job.priority > 0 else SWAP_REQUESTED, record)
        metrics.JOBS_PLANNED.labels(lane).inc()


async def plan_now(planner: Planner, count: int, trigger: str, *, allow_repeats: bool = False,
                   seed: int | None = None) -> Plan:
    """A batch of up to ``count`` jobs now (the schedule, `reelfab plan`), written and announced."""
    if not 1 <= count <= MAX_BATCH:
        raise PermanentError(f"a plan's count must be 1 to {MAX_BATCH:,}, not {count}")
    plan_id = f"plan-{planner.new_id()}"
    plan = await make_plan(planner, PlanRequest(plan_id, count, planner.clock(), allow_repeats, None, seed), trigger)
    async with planner.uow.begin(plan_event(plan_id), "plan") as tx:
        await write_plan(planner, tx, plan, trigger, count)
    log_plan(plan, trigger, count)
    return plan


def trend_request(planner: Planner, trend: TrendDetected) -> PlanRequest:
    """The plan a trend asks for; PermanentError for a trend no plan can come from."""
    if not math.isfinite(trend.urgency) or not 0.0 <= trend.urgency <= 1.0:
        raise PermanentError(f"trend {trend.trend_id}: urgency {trend.urgency!r} is not between 0 and 1")
    if trend.max_jobs is not None and trend.max_jobs < 1:
        raise PermanentError(f"trend {trend.trend_id}: max_jobs {trend.max_jobs} is not at least 1")
    if len(trend.tags) > MAX_TREND_TAGS:
        raise PermanentError(f"trend {trend.trend_id}: {len(trend.tags)} tags, more than the {MAX_TREND_TAGS} a trend may name")
    ask = TrendAsk(trend.trend_id, frozenset(t.strip().lower() for t in trend.tags if t.strip()), trend.deadline,
                   trend.max_jobs, trend.title)
    cap = planner.config.trend_max_jobs
    return PlanRequest(f"trend-{trend.event_id}", min(trend.max_jobs or cap, cap), planner.clock(), trend=ask)


def trend_outcome(plan: Plan) -> str | None:
    """Why a trend planned nothing (a metric label), or None when it planned."""
    if plan.jobs:
        return None
    text = " ".join(plan.notes)
    if "past its deadline" in text:
        return "past_deadline"
    if "no template matches" in text:
        return "no_template"
    return "no_candidate"


def log_plan(plan: Plan, trigger: str, asked: int, **extra: Any) -> None:
    fields = dict(plan_id=plan.plan_id, trigger=trigger, asked=asked, planned=len(plan.jobs),
                  candidates=plan.candidates, available=plan.available, **extra)
    if plan.notes:
        fields["notes"] = plan.notes
    if plan.jobs:
        log.info("planned", **fields)
    else:
        log.warning("planned nothing", **fields)


async def known_arms(planner: Planner, space: str) -> set[str] | None:
    """The arm ids of ``space`` the planner can plan today: a policy for anything else is ignored."""
    subjects = set(planner.view.latest)
    if space == SUBJECT:
        return subjects
    templates = {t.template_id for t in await planner.catalogue.templates(include_retired=True)}
    if space == TEMPLATE:
        return templates
    if space == MUSIC:
        return {m.music_id for m in await planner.catalogue.music()} | {NO_MUSIC}
    if space == STYLE:
        return {s.style_id for s in planner.styles}
    if space == SUBJECT_TEMPLATE:
        return {pair_arm(s, t) for s in subjects for t in templates}
    return None
