"""post-producer service: wiring only (the service shape: docs/architecture.md). bootstrap.py builds the adapters, usecase.py
runs the workflow over them, domain.py decides, handlers.py writes the outcome in a unit of work. The
media work itself lives in reelfab.media (render, spec_check, c2pa_sign, titles); consent at the
point of use through reelfab.consent."""

from __future__ import annotations

import asyncio

from reelfab.consent.view import ConsentView
from reelfab.contracts.topics import CONSENT_CHANGED, JOB_FAILED, RENDER_COMPLETED, SWAP_COMPLETED
from reelfab.media.workroot import claim_work_root
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from . import handlers
from .bootstrap import PostProducer, bootstrap

SPEC = ServiceSpec(
    name="post-producer",
    package=__package__ or "reelfab_post_producer",
    db_schema="post_producer",
    default_port=8084,
    consumes=(CONSENT_CHANGED, SWAP_COMPLETED),
    produces=(RENDER_COMPLETED, JOB_FAILED),
    description="Mezzanine in; platform-spec, labelled, signed video out.",
)


def wire(ctx: ServiceContext) -> None:
    post = bootstrap(ctx)
    post.view.listeners.append(handlers.on_consent_withdrawn(post))
    post.view.subscribe(ctx.bus)  # a group of its own: every instance reads every lease
    ctx.bus.subscribe(SWAP_COMPLETED, handlers.on_swap_completed(post))
    ctx.extras["post"] = post
    ctx.on_start.append(lambda: _claim_workdir(post))
    ctx.on_start.append(lambda: _catch_up(post.view, ctx))


async def _claim_workdir(post: PostProducer) -> None:
    """Before the first job: remove the work folders a killed post-producer left (half-rendered
    MP4s) and work in a folder of this process's own, so replicas sharing state_dir never delete
    each other's (reelfab.media.workroot)."""
    post.workdir = await asyncio.to_thread(claim_work_root, post.workdir)


async def _catch_up(view: ConsentView, ctx: ServiceContext) -> None:
    await view.catch_up(ctx.bus)  # before the first job: judge nothing on an empty view


main = entry_point(SPEC, wire)
