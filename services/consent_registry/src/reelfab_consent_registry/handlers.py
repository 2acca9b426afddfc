"""consent-registry handlers, one per consumed topic: posts that used a face (for takedown lists),
flags from analytics and consent denials reported by other stages join the registry's records."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from reelfab.bus import Event
from reelfab.bus.idempotency import handle_once
from reelfab.consent.decision import DENIAL_REASONS
from reelfab.service import ServiceContext

from .registry import Registry

Handler = Callable[[Event[Any]], Awaitable[None]]
CHECKPOINT_REPLAYS = Counter(
    "reelfab_audit_checkpoint_replays_total",
    "Genuine audit checkpoints seen on the topic after a newer one: an older checkpoint published again.",
    ["log_id"],
)


def on_publish_completed(ctx: ServiceContext, registry: Registry) -> Handler:
    async def handle(event: Event[Any]) -> None:
        r = event.record

        async def work(conn: Any) -> None:
            await registry.record_post(conn, post_id=r.post_id, platform=r.platform, subject_id=r.face_id, job_id=r.job_id,
                                       consent_version=r.consent_version, published_at=r.published_at)

        await handle_once(registry.pool, registry.schema, event, "publish.completed", work)

    return handle


def on_job_failed(ctx: ServiceContext, registry: Registry) -> Handler:
    async def handle(event: Event[Any]) -> None:
        r = event.record
        reason = r.reason_code.removeprefix("consent.")
        if reason not in DENIAL_REASONS:
            return  # not a consent decision: the planner and analytics deal with it

        async def work(conn: Any) -> None:
            await registry.report_denial(conn, subject_id=r.face_id, reason=reason, stage=r.stage, job_id=r.job_id, actor=r.stage)

        await handle_once(registry.pool, registry.schema, event, "job.failed", work)

    return handle


def on_subject_flagged(ctx: ServiceContext, registry: Registry) -> Handler:
    async def handle(event: Event[Any]) -> None:
        from . import audit

        r = event.record

        async def work(conn: Any) -> None:
            await audit.append(conn, registry.schema, actor=r.producer, action="subject.flagged", subject_id=r.subject_id,
                               details={"kind": r.subject_kind, "action": r.action, "reason": r.reason})

        await handle_once(registry.pool, registry.schema, event, "subject.flagged", work)

    return handle


def on_audit_checkpoint(ctx: ServiceContext, registry: Registry) -> Handler:
    """The registry follows its own published checkpoints: the newest one that verifies is what the
    next checkpoint must extend (after a restart, too, without scanning the topic)."""

    async def handle(event: Event[Any]) -> None:
        from . import audit, keys

        r = event.record
        if r.log_id != registry.log_id:
            return  # another registry's log (another schema)
        try:
            cp = audit.checkpoint_from_record(r)
            audit.verify_checkpoint(cp, registry.trusted_keys or await keys.public_keys(registry.pool, registry.schema))
        except audit.CheckpointInvalid as exc:
            from reelfab.logging import get_logger

            get_logger("reelfab.consent_registry").error("a checkpoint on the topic does not verify", error=str(exc))
            return
        last = registry._last_checkpoint  # noqa: SLF001 - the registry's own memory of what it signed
        if last is not None and cp.entry_count < last.entry_count:
            # a genuine but older checkpoint published again: someone is rewinding the evidence
            from reelfab.logging import get_logger

            CHECKPOINT_REPLAYS.labels(registry.log_id).inc()
            get_logger("reelfab.consent_registry").error(
                "an older audit checkpoint was published again (a replay): verify-audit will name it",
                replayed_count=cp.entry_count, newest_count=last.entry_count, event_id=r.event_id)
            return
        if last is None or cp.entry_count > last.entry_count:
            registry._last_checkpoint = cp  # noqa: SLF001

    return handle


HANDLERS = {
    "reelfab.publish.completed.v1": on_publish_completed,
    "reelfab.subject.flagged.v1": on_subject_flagged,
    "reelfab.job.failed.v1": on_job_failed,
    "reelfab.audit.checkpoint.v1": on_audit_checkpoint,
}
