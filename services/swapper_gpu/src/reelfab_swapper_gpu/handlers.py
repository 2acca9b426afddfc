"""swapper-gpu handlers: a swap job runs its workflow (workflow.py: consent first, before any pixel;
the template's quality gate; the swap in a worker thread) and its outcome is announced in the unit of
work that marks the event processed: swap.completed, or job.failed with the reason."""

from __future__ import annotations

from reelfab.bus.message import Event, Handler
from reelfab.contracts.records import SwapRequested
from reelfab.contracts.topics import SWAP_COMPLETED
from reelfab.service import fail_job

from . import metrics
from .bootstrap import Swapper
from .domain import Failure
from .workflow import swap_job


def on_swap_requested(swapper: Swapper) -> Handler:
    ctx, uow = swapper.ctx, swapper.uow

    async def handle(event: Event[SwapRequested]) -> None:
        if await uow.processed(event.event_id):  # redelivered after its outcome committed: nothing to redo
            return
        outcome = await swap_job(event.record, swapper.ports)
        if isinstance(outcome, Failure):  # a decision: announced, never retried
            await fail_job(ctx, event, "swap", outcome.code, outcome.detail)
        else:
            async with uow.begin(event, "swap") as tx:
                if tx.fresh:
                    await tx.publish(SWAP_COMPLETED, outcome.record)
        metrics.JOBS.labels(outcome.outcome).inc()

    return handle
