"""post-producer handlers: consent events feed the local view (main.wire); a swapped mezzanine goes
through the workflow (usecase.post_produce) and its outcome is written in one unit of work: the
processed-event mark, the rendered_jobs row and the announcement (render.completed, or job.failed
for a job consent stopped) commit together or not at all. A withdrawn consent removes the media of
the subject's rendered jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from reelfab.bus import Event, Handler
from reelfab.consent.lease import LeaseTerms
from reelfab.contracts.records import SwapCompleted
from reelfab.contracts.topics import JOB_FAILED, RENDER_COMPLETED
from reelfab.logging import get_logger
from reelfab.service import job_failed

from .bootstrap import PostProducer
from .usecase import Outcome, Stopped, post_produce, purge_withdrawn

HANDLER = "render"
log = get_logger("reelfab.post")


def on_swap_completed(post: PostProducer) -> Handler:
    async def handle(event: Event[SwapCompleted]) -> None:
        job = event.record
        if await post.uow.processed(event.event_id):  # a redelivery: rendered (or stopped) before
            return
        outcome = await post_produce(post, job)  # the long part: outside any transaction
        async with post.uow.begin(event, HANDLER) as tx:
            if not tx.fresh:  # a duplicate finished first
                return
            if isinstance(outcome, Stopped):
                f = outcome.failure
                await tx.publish(JOB_FAILED, job_failed(post.spec, event, f.reason_code, f.detail))
            else:
                await tx.publish(RENDER_COMPLETED, outcome.record)
                await post.jobs.add(tx.conn, job.job_id, job.subject_id)
        _log(job.job_id, outcome)

    return handle


def _log(job_id: str, outcome: Outcome) -> None:
    if isinstance(outcome, Stopped):
        log.warning("job failed", job_id=job_id, reason=outcome.failure.reason_code, detail=outcome.failure.detail)
    else:
        log.info("rendered", job_id=job_id, final=outcome.record.final_uri)


def on_consent_withdrawn(post: PostProducer) -> Callable[[LeaseTerms], Awaitable[None]]:
    """A consent-view listener: a revoked or erased lease removes what was rendered from the face."""

    async def handle(terms: LeaseTerms) -> None:
        await purge_withdrawn(post, terms)

    return handle
