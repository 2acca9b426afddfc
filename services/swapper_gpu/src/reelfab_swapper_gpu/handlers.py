"""swapper-gpu handlers: a swap job past its deadline fails at once; any other waits for a run slot
(priority.py: an expedited job before any waiting normal one), then runs its workflow (workflow.py:
its deadline again, consent first, before any pixel; the template's quality gate; the swap in a worker
thread) and its outcome is announced in the unit of work that marks the event processed:
swap.completed, or job.failed with the reason. The same handler serves reelfab.swap.requested.v1 and
reelfab.swap.expedited.v1, each through a consumer of its own (main.py)."""

from __future__ import annotations

from reelfab.bus.message import Event, Handler
from reelfab.contracts.records import SwapRequested
from reelfab.contracts.topics import SWAP_COMPLETED
from reelfab.logging import get_logger
from reelfab.service import fail_job

from . import metrics
from .bootstrap import Swapper
from .domain import Failure, Outcome
from .priority import lane_for
from .workflow import swap_job, too_late

log = get_logger("reelfab.swapper")


def on_swap_requested(swapper: Swapper) -> Handler:
    ctx, uow = swapper.ctx, swapper.uow

    async def handle(event: Event[SwapRequested]) -> None:
        if await uow.processed(event.event_id):  # redelivered after its outcome committed: nothing to redo
            return
        job = event.record
        lane = lane_for(event.topic, job.priority)
        outcome: Outcome | None = await too_late(job, swapper.ports)  # already late: it does not queue for a slot
        if outcome is None:
            async with swapper.admission.slot(lane):  # freed before the outcome is written: the next job starts
                log.info("job started", job_id=job.job_id, lane=lane.value, waiting=swapper.admission.waiting())
                outcome = await swap_job(job, swapper.ports)
        if isinstance(outcome, Failure):  # a decision: announced, never retried
            await fail_job(ctx, event, "swap", outcome.code, outcome.detail)
        else:
            async with uow.begin(event, "swap") as tx:
                if tx.fresh:
                    await tx.publish(SWAP_COMPLETED, outcome.record)
        metrics.JOBS.labels(outcome.outcome).inc()

    return handle
