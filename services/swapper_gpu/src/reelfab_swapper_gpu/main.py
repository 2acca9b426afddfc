"""swapper-gpu service: wiring only (the service shape: docs/architecture.md). The real adapters go through bootstrap.py;
decisions live in domain.py, the job's steps in workflow.py, the streamed swap in swap.py; consent at
the point of use through reelfab.consent."""

from __future__ import annotations

import asyncio
from functools import partial

from reelfab.consent.client import RegistryClient
from reelfab.consent.gate import ConsentGate, load_public_keys
from reelfab.consent.view import ConsentView
from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    JOB_FAILED,
    SWAP_COMPLETED,
    SWAP_EXPEDITED,
    SWAP_REQUESTED,
)
from reelfab.media.workroot import claim_work_root
from reelfab.service import ServiceContext, ServiceSpec, entry_point
from reelfab.settings import Settings
from reelfab.storage import open_store

from . import handlers, metrics
from .adapters import backend_engines
from .bootstrap import Swapper, bootstrap
from .domain import CLASSICAL, jobs_that_fit, per_job_bytes

SPEC = ServiceSpec(
    name="swapper-gpu",
    package=__package__ or "reelfab_swapper_gpu",
    db_schema="swapper_gpu",
    default_port=8083,
    consumes=(CONSENT_CHANGED, SWAP_REQUESTED, SWAP_EXPEDITED),
    produces=(SWAP_COMPLETED, JOB_FAILED),
    description="Swap jobs in; swapped mezzanine and face track out.",
)


def wire(ctx: ServiceContext) -> None:
    settings = ctx.settings
    registry = RegistryClient.from_settings(settings) if settings.consent_token else None
    view = ConsentView(lambda: load_public_keys(settings, registry), service=SPEC.name)
    manifest, installed = _models(settings)
    budget = settings.swapper_memory_bytes
    swapper = bootstrap(
        ctx, store=open_store(settings.storage_root), view=view, gate=ConsentGate(view, registry),
        engine_factory=backend_engines(settings), manifest=manifest, installed=installed,
        fetch_image=registry.fetch_image if registry is not None else None,
        slots=jobs_that_fit(budget, per_job_bytes(1080, 1920, 8)),
    )
    if registry is not None:  # its outage is cleared by its health check, not by a job that did not ask it
        ctx.probes["consent registry"] = partial(asyncio.to_thread, registry.ping)
    view.subscribe(ctx.bus)  # a group of its own: every instance reads every lease
    # priority: each topic has its own consumer (one job at a time each), so an expedited job never waits
    # behind the normal topic's backlog; both share the run slots, expedited first (priority.Admission)
    handle = handlers.on_swap_requested(swapper)
    ctx.bus.subscribe(SWAP_EXPEDITED, handle)
    ctx.bus.subscribe(SWAP_REQUESTED, handle)
    ctx.extras["swapper"] = swapper
    ctx.on_start.append(lambda: _claim_workdir(swapper))
    ctx.on_start.append(lambda: _catch_up(view, ctx))
    ctx.on_start.append(lambda: _warm_up(swapper))
    if metrics.register_gpu_metrics():
        ctx.extras["gpu"] = True


def _models(settings: Settings) -> tuple[dict[str, tuple[str, bool]], set[str]]:
    """Licences from the model manifest and what is installed here (empty without the onnx backend)."""
    try:
        from reelfab.faces.backends import models_dir
        from reelfab.faces.onnx.store import ModelStore
    except ImportError:
        return {}, set()
    store = ModelStore(models_dir(settings))
    rows = store.list()
    return ({r["name"]: (r["licence"], bool(r["commercial"])) for r in rows},
            {r["name"] for r in rows if r["installed"]})


async def _warm_up(swapper: Swapper) -> None:
    """Load the default backend's models before the first job (dlib's take ~1 s), not during it."""
    if swapper.ctx.settings.face_backend == "classical" and swapper.ctx.pool is not None:
        await asyncio.to_thread(swapper.engines, CLASSICAL)


async def _claim_workdir(swapper: Swapper) -> None:
    """Before the first job: remove the work folders a killed swapper left (half-written mezzanines)
    and work in a folder of this process's own, so replicas sharing state_dir never delete each
    other's (reelfab.media.workroot)."""
    swapper.workdir = await asyncio.to_thread(claim_work_root, swapper.workdir)


async def _catch_up(view: ConsentView, ctx: ServiceContext) -> None:
    await view.catch_up(ctx.bus)  # before the first job: judge nothing on an empty view


main = entry_point(SPEC, wire)
