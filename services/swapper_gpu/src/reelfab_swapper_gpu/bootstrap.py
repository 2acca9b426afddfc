"""Builds the swapper from its adapters: the one place that decides which are live. ``main.wire``
passes the real ones (ConsentGate over the registry, the file store, the face backends, run_swap);
unit tests pass fakes and an in-memory unit of work, and run every handler path in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from reelfab.bus import new_event_id
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.faces.qc import TemplateRules, check_template
from reelfab.faces.report import QualityGate
from reelfab.service import ServiceContext
from reelfab.storage import FileStore, purge_job_media

from .adapters import EngineCache, EngineFactory, TemplateCheck, TemplateVerdicts
from .domain import ModelPolicy
from .swap import run_swap
from .workflow import Gate, SwapClip, SwapPorts


class ConsentWatch(Protocol):
    """The local consent view as a running job asks it (reelfab.consent.view.ConsentView)."""

    def withdrawn(self, subject: str) -> tuple[str, str] | None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Swapper:
    """What the swapper's handlers get: the service context, its unit of work and the job's ports."""

    ctx: ServiceContext
    uow: UnitOfWork
    ports: SwapPorts
    store: FileStore
    view: ConsentWatch
    engines: EngineCache

    @property
    def workdir(self) -> Path:
        return self.ports.workdir

    @workdir.setter
    def workdir(self, path: Path) -> None:
        self.ports.workdir = path


def bootstrap(
    ctx: ServiceContext,
    *,
    store: FileStore,
    view: ConsentWatch,
    gate: Gate,
    engine_factory: EngineFactory,
    swap_clip: SwapClip = run_swap,
    clock: Callable[[], datetime] = utc_now,
    new_id: Callable[[], str] = new_event_id,
    template_check: TemplateCheck = check_template,
    template_rules: TemplateRules | None = None,
    manifest: Mapping[str, tuple[str, bool]] | None = None,
    installed: set[str] | frozenset[str] = frozenset(),
    slots: int = 1,
    workdir: Path | None = None,
    detect_every: int = 5,
    batch_size: int = 8,
) -> Swapper:
    """``manifest``: model name -> (licence, commercial use allowed); ``installed``: model files here;
    ``slots``: jobs at once (reelfab_swapper_gpu.domain.jobs_that_fit); ``workdir``: the work root
    (default: <state_dir>/swapper-work)."""
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    engines = EngineCache(engine_factory)
    ports = SwapPorts(
        gate=gate,
        store=store,
        engine=engines,
        judge_template=TemplateVerdicts(engines, template_check, template_rules or TemplateRules()),
        swap_clip=swap_clip,
        withdrawn=view.withdrawn,
        purge=lambda job_id: purge_job_media(store, job_id),
        clock=clock,
        new_id=new_id,
        models=ModelPolicy(ctx.settings.face_backend, ctx.settings.commercial_mode, dict(manifest or {}),
                           frozenset(installed)),
        slots=asyncio.Semaphore(slots),
        workdir=workdir or Path(ctx.settings.state_dir) / "swapper-work",
        producer=ctx.spec.name,
        detect_every=detect_every,
        batch_size=batch_size,
        quality=QualityGate(ctx.settings.swap_min_swapped_share),
    )
    return Swapper(ctx=ctx, uow=ctx.uow, ports=ports, store=store, view=view, engines=engines)
