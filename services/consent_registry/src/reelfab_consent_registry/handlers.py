"""consent-registry handlers, one per consumed topic: posts that used a face (for takedown lists),
flags from analytics and consent denials reported by other stages join the registry's records.

Each opens the unit of work for its event, asks the domain what the event means, and writes through
the repository bound to the unit's connection: the write commits with the event's processed mark or
not at all, so a redelivery changes nothing twice. The checkpoint handler writes nothing: it keeps
the registry's memory of the newest checkpoint (what the next one must extend)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from reelfab.bus import Event
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.contracts.generated.records import AuditCheckpoint, JobFailed, PublishCompleted, SubjectFlagged
from reelfab.contracts.topics import AUDIT_CHECKPOINT, JOB_FAILED, PUBLISH_COMPLETED, SUBJECT_FLAGGED
from reelfab.logging import get_logger

from . import audit, domain
from .use_cases import Registry

Handler = Callable[[Event[Any]], Awaitable[None]]
CHECKPOINT_REPLAYS = Counter(
    "reelfab_audit_checkpoint_replays_total",
    "Genuine audit checkpoints seen on the topic after a newer one: an older checkpoint published again.",
    ["log_id"],
)
log = get_logger("reelfab.consent_registry")


def on_publish_completed(registry: Registry, uow: UnitOfWork) -> Handler:
    async def handle(event: Event[PublishCompleted]) -> None:
        r = event.record
        post = domain.Post(post_id=r.post_id, platform=r.platform, subject_id=r.subject_id, job_id=r.job_id,
                           consent_version=r.consent_version, published_at=r.published_at)
        async with uow.begin(event, "publish.completed") as tx:
            if tx.fresh:
                await registry.record_post(registry.repository.bound(tx.conn), post)

    return handle


def on_job_failed(registry: Registry, uow: UnitOfWork) -> Handler:
    async def handle(event: Event[JobFailed]) -> None:
        r = event.record
        denial = domain.reported_denial(reason_code=r.reason_code, subject_id=r.subject_id, stage=r.stage, job_id=r.job_id)
        if denial is None:
            return  # not a consent decision: the planner and analytics deal with it
        async with uow.begin(event, "job.failed") as tx:
            if tx.fresh:
                await registry.report_denial(registry.repository.bound(tx.conn), denial)

    return handle


def on_subject_flagged(registry: Registry, uow: UnitOfWork) -> Handler:
    async def handle(event: Event[SubjectFlagged]) -> None:
        r = event.record
        entry = domain.flag_entry(producer=r.producer, subject_id=r.subject_id, subject_kind=r.subject_kind,
                                  action=r.action, reason=r.reason)
        async with uow.begin(event, "subject.flagged") as tx:
            if tx.fresh:
                await registry.record_flag(registry.repository.bound(tx.conn), entry)

    return handle


def on_audit_checkpoint(registry: Registry, uow: UnitOfWork) -> Handler:
    """The registry follows its own published checkpoints: the newest one that verifies is what the
    next checkpoint must extend (after a restart, too, without scanning the topic)."""
    trail = registry.trail

    async def handle(event: Event[AuditCheckpoint]) -> None:
        r = event.record
        if r.log_id != trail.log_id:
            return  # another registry's log (another schema)
        try:
            cp = audit.checkpoint_from_record(r)
            audit.verify_checkpoint(cp, await trail.public_keys())
        except audit.CheckpointInvalid as exc:
            log.error("a checkpoint on the topic does not verify", error=str(exc))
            return
        newest = trail.last.entry_count if trail.last is not None else None
        verdict = domain.checkpoint_verdict(newest, cp.entry_count)
        if verdict == "replay":  # a genuine but older checkpoint published again: someone is rewinding the evidence
            CHECKPOINT_REPLAYS.labels(trail.log_id).inc()
            log.error("an older audit checkpoint was published again (a replay): verify-audit will name it",
                      replayed_count=cp.entry_count, newest_count=newest, event_id=r.event_id)
        elif verdict == "newer":
            trail.last = cp

    return handle


HandlerFactory = Callable[[Registry, UnitOfWork], Handler]
HANDLERS: dict[str, HandlerFactory] = {
    PUBLISH_COMPLETED: on_publish_completed,
    SUBJECT_FLAGGED: on_subject_flagged,
    JOB_FAILED: on_job_failed,
    AUDIT_CHECKPOINT: on_audit_checkpoint,
}


def make_handlers(registry: Registry, uow: UnitOfWork) -> dict[str, Handler]:
    """Every consumed topic's handler, bound to the registry and the unit of work."""
    return {topic: make(registry, uow) for topic, make in HANDLERS.items()}
