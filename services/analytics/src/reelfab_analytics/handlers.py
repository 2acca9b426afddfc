"""analytics handlers, one per consumed topic. Each checks its record first (bad input raises a
PermanentError naming the field, and the bus dead-letters it with that reason), then opens the unit
of work of the event: the processed-event mark, the table changes (usecase.py) and the SubjectFlagged
announcements commit together or not at all, so a redelivery changes nothing. The changed arm spaces
are published by the policy flusher (flusher.py), not here: one PolicyUpdated per space per batch."""

from __future__ import annotations

from reelfab.bus import Event, Handler, new_event_id
from reelfab.bus.unit_of_work import Transaction
from reelfab.contracts.records import EngagementObserved, JobFailed, PublishCompleted
from reelfab.contracts.topics import ENGAGEMENT_OBSERVED, JOB_FAILED, PUBLISH_COMPLETED, SUBJECT_FLAGGED
from reelfab.errors import PermanentError
from reelfab.logging import get_logger

from . import metrics, usecase
from .bootstrap import Analytics
from .rules import Flag

# consumed topic -> the handler's name (its processed-event marks and log lines carry it)
HANDLED: dict[str, str] = {
    PUBLISH_COMPLETED: "publish.completed",
    ENGAGEMENT_OBSERVED: "engagement.observed",
    JOB_FAILED: "job.failed",
}
log = get_logger("reelfab.analytics")


def handlers(analytics: Analytics) -> dict[str, Handler]:
    return {
        PUBLISH_COMPLETED: on_publish_completed(analytics),
        ENGAGEMENT_OBSERVED: on_engagement_observed(analytics),
        JOB_FAILED: on_job_failed(analytics),
    }


def on_publish_completed(analytics: Analytics) -> Handler:
    async def handle(event: Event[PublishCompleted]) -> None:
        record = event.record
        lineage = usecase.lineage_of_publication(record)  # a malformed arm_id is dead-lettered, naming it
        if (disagreement := lineage.disagreement()) is not None:
            log.warning("publication's lineage disagrees with its arm_id; the arm_id decides", job_id=record.job_id,
                        post_id=record.post_id, detail=disagreement)
        async with analytics.uow.begin(event, HANDLED[PUBLISH_COMPLETED]) as tx:
            if not tx.fresh:
                return
            flags = await usecase.publication(analytics, tx.conn, record, lineage, event.event_id)
            await _announce(analytics, tx, event, flags)
        _flagged(flags)

    return handle


def on_engagement_observed(analytics: Analytics) -> Handler:
    async def handle(event: Event[EngagementObserved]) -> None:
        try:
            reading = usecase.checked_reading(analytics, event.record)
        except PermanentError:
            metrics.OBSERVATIONS.labels("rejected").inc()
            raise
        async with analytics.uow.begin(event, HANDLED[ENGAGEMENT_OBSERVED]) as tx:
            if not tx.fresh:
                metrics.OBSERVATIONS.labels("duplicate").inc()
                return
            observed = await usecase.observation(analytics, tx.conn, reading, event.event_id)
            await _announce(analytics, tx, event, observed.flags)
        metrics.OBSERVATIONS.labels(observed.outcome).inc()
        _flagged(observed.flags)

    return handle


def on_job_failed(analytics: Analytics) -> Handler:
    async def handle(event: Event[JobFailed]) -> None:
        record = event.record
        if not analytics.strikes.is_strike(record.reason_code):
            return  # not a moderation strike: nothing of analytics' changes, so nothing to make idempotent
        async with analytics.uow.begin(event, HANDLED[JOB_FAILED]) as tx:
            if not tx.fresh:
                return
            struck = await usecase.failure(analytics, tx.conn, record, event.event_id)
            await _announce(analytics, tx, event, struck.flags)
        if struck.targets:
            metrics.STRIKES.labels("counted").inc()
        else:
            metrics.STRIKES.labels("no_target").inc()
            log.warning("moderation strike against no known subject (the job's post is not known either)",
                        job_id=record.job_id, reason_code=record.reason_code)
        _flagged(struck.flags)

    return handle


async def _announce(analytics: Analytics, tx: Transaction,
                    event: Event[PublishCompleted] | Event[EngagementObserved] | Event[JobFailed],
                    flags: list[Flag]) -> None:
    for flag in flags:
        await tx.publish(SUBJECT_FLAGGED, usecase.flag_record(
            flag, event_id=new_event_id(), now=analytics.clock(), producer=analytics.spec.name,
            trace_id=event.record.trace_id))


def _flagged(flags: list[Flag]) -> None:
    for flag in flags:
        metrics.FLAGS.labels(flag.kind, flag.action).inc()
        log.warning("flagged", kind=flag.kind, target=flag.target_id, action=flag.action, reason=flag.reason)
