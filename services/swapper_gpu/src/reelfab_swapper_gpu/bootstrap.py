"""Builds the swapper from its adapters: the one place that decides which are live. ``main.wire``
passes the real ones (ConsentGate over the registry, the registry's image fetcher, the file store, the
face backends, run_swap);
unit tests pass fakes and an in-memory unit of work, and run every handler path in milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from reelfab.bus import new_event_id
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.faces.qc import TemplateRules, check_template
from reelfab.faces.report import QualityGate
from reelfab.media.delivery import render_spec
from reelfab.service import ServiceContext
from reelfab.storage import FileStore, purge_job_media

from . import metrics
from .adapters import (
    EngineCache,
    EngineFactory,
    TemplateCheck,
    TemplateVerdicts,
    TrackCache,
    TrackTemplate,
    track_with,
)
from .domain import ModelPolicy
from .priority import Admission, Lane
from .swap import run_swap
from .workflow import Gate, ImageFetcher, SwapClip, SwapPorts


class ConsentWatch(Protocol):
    """The local consent view as a running job asks it (reelfab.consent.view.ConsentView)."""

    def withdrawn(self, subject: str) -> tuple[str, str] | None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Swapper:
    """What the swapper's handlers get: the service context, its unit of work, the run slots' admission
    and the job's ports."""

    ctx: ServiceContext
    uow: UnitOfWork
    admission: Admission
    ports: SwapPorts
    store: FileStore
    view: ConsentWatch
    engines: EngineCache
    tracks: TrackCache

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
    fetch_image: ImageFetcher | None = None,
    swap_clip: SwapClip = run_swap,
    clock: Callable[[], datetime] = utc_now,
    new_id: Callable[[], str] = new_event_id,
    template_check: TemplateCheck = check_template,
    template_rules: TemplateRules | None = None,
    track_template: TrackTemplate = track_with,
    manifest: Mapping[str, tuple[str, bool]] | None = None,
    installed: set[str] | frozenset[str] = frozenset(),
    slots: int = 1,
    workdir: Path | None = None,
    detect_every: int = 5,
    batch_size: int = 8,
) -> Swapper:
    """``manifest``: model name -> (licence, commercial use allowed); ``installed``: model files here;
    ``slots``: jobs at once (reelfab_swapper_gpu.domain.jobs_that_fit), the admission's run slots
    (priority.py); ``fetch_image``: enrolled images by reference (RegistryClient.fetch_image; None
    without a registry token); ``workdir``: the work root
    (default: <state_dir>/swapper-work). Settings: ``swap_track_cache_mb`` (templates' face tracks
    kept), ``fused_render`` (render to the platform spec as the frames are swapped)."""
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    settings = ctx.settings
    engines = EngineCache(engine_factory)
    tracks = TrackCache(engines, settings.swap_track_cache_mb * 2**20, track=track_template, detect_every=detect_every)
    ports = SwapPorts(
        gate=gate,
        store=store,
        engine=engines,
        judge_template=TemplateVerdicts(engines, template_check, template_rules or TemplateRules()),
        track=tracks,
        swap_clip=swap_clip,
        withdrawn=view.withdrawn,
        purge=lambda job_id: purge_job_media(store, job_id),
        clock=clock,
        new_id=new_id,
        models=ModelPolicy(settings.face_backend, settings.commercial_mode, dict(manifest or {}),
                           frozenset(installed)),
        workdir=workdir or Path(settings.state_dir) / "swapper-work",
        producer=ctx.spec.name,
        batch_size=batch_size,
        quality=QualityGate(settings.swap_min_swapped_share),
        render=render_spec(settings) if settings.fused_render else None,
        fetch_image=fetch_image,
    )
    admission = Admission(slots, watch=_waiting, admitted=_admitted)
    return Swapper(ctx=ctx, uow=ctx.uow, admission=admission, ports=ports, store=store, view=view, engines=engines,
                   tracks=tracks)


def _waiting(lane: Lane, waiting: int) -> None:
    metrics.WAITING.labels(lane.value).set(waiting)


def _admitted(lane: Lane, waited_s: float) -> None:
    metrics.ADMISSIONS.labels(lane.value).inc()
    metrics.SLOT_WAIT.labels(lane.value).observe(waited_s)
