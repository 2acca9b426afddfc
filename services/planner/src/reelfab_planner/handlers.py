"""planner handlers, one per consumed topic. Consent events feed the local view (main.wire); a trend is
planned at once and its jobs go out expedited; the stage events move the job ledger; a policy update
replaces an arm space's posteriors; a flag disables (or clears) an arm for planning at once. Each
writes in one unit of work with the event's processed mark, so a redelivery changes nothing."""

from __future__ import annotations

from typing import TypeVar

from reelfab.bus import Event, Handler
from reelfab.contracts.records import (
    JobFailed,
    PolicyUpdated,
    PublishCompleted,
    RenderCompleted,
    SubjectFlagged,
    SwapCompleted,
    TrendDetected,
)
from reelfab.logging import get_logger

from . import metrics
from .bootstrap import Planner
from .ledger import FAILED, PUBLISHED, RENDERED, SWAPPED, Step
from .repository import Seen
from .usecase import known_arms, log_plan, make_plan, trend_outcome, trend_request, write_plan

log = get_logger("reelfab.planner")
StageRecord = TypeVar("StageRecord", SwapCompleted, RenderCompleted, PublishCompleted, JobFailed)


def on_trend(planner: Planner) -> Handler:
    async def handle(event: Event[TrendDetected]) -> None:
        trend = event.record
        if await planner.uow.processed(event.event_id):
            return
        request = trend_request(planner, trend)
        plan = await make_plan(planner, request, "trend")
        async with planner.uow.begin(event, "trend") as tx:
            if not tx.fresh:
                return
            await write_plan(planner, tx, plan, "trend", request.count)
        if (why := trend_outcome(plan)) is not None:
            metrics.TRENDS_UNMATCHED.labels(why).inc()
        log_plan(plan, "trend", request.count, trend_id=trend.trend_id, tags=sorted(trend.tags))

    return handle


def _swapped(r: SwapCompleted) -> tuple[Step, Seen]:
    detail = {"mezzanine_sha256": r.mezzanine_sha256, "face_track_sha256": r.face_track_sha256, "swap_backend": r.backend,
              "swapped_model": r.swapper_model, "swapped_model_licence": r.model_license, "frames": r.frames, "rendered": r.rendered,
              "source_image_sha256": r.source_image_sha256, "template_sha256": r.template_sha256}
    return Step(SWAPPED, r.occurred_at, detail), Seen(r.subject_id, r.consent_version, r.template_id, r.arm_id, r.trend_id)


def _rendered(r: RenderCompleted) -> tuple[Step, Seen]:
    detail = {"final_uri": r.final_uri, "final_sha256": r.final_sha256, "c2pa_manifest_label": r.c2pa_manifest_label,
              "spec_check_passed": r.spec_check.passed, "title": r.title}
    return Step(RENDERED, r.occurred_at, detail), Seen(r.subject_id, r.consent_version, r.template_id, r.arm_id)


def _published(r: PublishCompleted) -> tuple[Step, Seen]:
    detail = {"post_id": r.post_id, "platform": r.platform, "account": r.account, "privacy_level": r.privacy_level,
              "dry_run": r.dry_run, "share_url": r.share_url, "published_at": r.published_at.isoformat()}
    return Step(PUBLISHED, r.occurred_at, detail), Seen(r.subject_id, r.consent_version, r.template_id, r.arm_id)


def _failed(r: JobFailed) -> tuple[Step, Seen]:
    detail = {"stage": r.stage, "reason_code": r.reason_code, "reason": r.reason, "retryable": r.retryable,
              "attempts": r.attempts}
    return (Step(FAILED, r.occurred_at, {"failure": detail}),
            Seen(r.subject_id, r.consent_version, failure=(r.stage, r.reason_code, r.reason)))


async def _move(planner: Planner, event: Event[StageRecord], name: str, job_id: str, step: Step, seen: Seen) -> None:
    """A stage event moves its job along the ledger, once."""
    async with planner.uow.begin(event, name) as tx:
        if not tx.fresh:
            return
        moved = await planner.store.record_step(tx.conn, job_id, step, seen)
    log.info("job moved" if moved.changed else "job step recorded", job_id=job_id, status=moved.status,
             step=step.status)


def on_swapped(planner: Planner) -> Handler:
    async def handle(event: Event[SwapCompleted]) -> None:
        await _move(planner, event, "swap.completed", event.record.job_id, *_swapped(event.record))

    return handle


def on_rendered(planner: Planner) -> Handler:
    async def handle(event: Event[RenderCompleted]) -> None:
        await _move(planner, event, "render.completed", event.record.job_id, *_rendered(event.record))

    return handle


def on_published(planner: Planner) -> Handler:
    async def handle(event: Event[PublishCompleted]) -> None:
        await _move(planner, event, "publish.completed", event.record.job_id, *_published(event.record))

    return handle


def on_failed(planner: Planner) -> Handler:
    async def handle(event: Event[JobFailed]) -> None:
        await _move(planner, event, "job.failed", event.record.job_id, *_failed(event.record))

    return handle


def on_policy(planner: Planner) -> Handler:
    async def handle(event: Event[PolicyUpdated]) -> None:
        record = event.record
        arms = [a.to_avro() for a in record.arms]
        async with planner.uow.begin(event, "policy.updated") as tx:
            if not tx.fresh:
                return
            await planner.store.save_policy(tx.conn, record.arm_space, record.policy_version, arms, record.computed_at)
        update = planner.policy.apply(record.arm_space, record.policy_version, arms, await known_arms(planner, record.arm_space))
        if update.unknown:
            metrics.POLICY_UNKNOWN_ARMS.labels(record.arm_space).inc(update.unknown)
        log.info("policy applied" if update.applied else "policy ignored", space=record.arm_space,
                 version=record.policy_version, arms=update.arms, unknown_arms=update.unknown, detail=update.detail)

    return handle


def on_flag(planner: Planner) -> Handler:
    async def handle(event: Event[SubjectFlagged]) -> None:
        record = event.record
        kind, action = record.subject_kind, record.action
        async with planner.uow.begin(event, "subject.flagged") as tx:
            if not tx.fresh:
                return
            await planner.store.set_flag(tx.conn, kind, record.subject_id, action, record.reason, record.occurred_at)
        log.warning("flag recorded", kind=kind, item=record.subject_id, action=action, reason=record.reason)

    return handle
