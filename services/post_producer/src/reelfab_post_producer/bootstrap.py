"""Builds the post-producer from its service context: the one place that knows which adapters are live.
``main.wire`` calls ``bootstrap(ctx)`` for the real ones (ffmpeg, ffprobe, C2PA, the object store, the
consent view and gate, PostgreSQL); unit tests pass fakes for any of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from reelfab.bus import now_utc
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.consent.client import RegistryClient
from reelfab.consent.gate import ConsentGate, load_public_keys
from reelfab.consent.view import ConsentView
from reelfab.media.c2pa_sign import SigningMaterial, make_test_ca
from reelfab.media.delivery import render_spec
from reelfab.media.render import RenderSpec
from reelfab.service import ServiceContext, ServiceSpec
from reelfab.settings import Settings
from reelfab.storage import open_store

from .adapters import C2paSigner, FfmpegRenderer, FfprobeSpecCheck, StoreMedia
from .ports import Clock, ConsentCheck, MediaStore, RenderedJobs, Renderer, Signer, SpecChecker
from .repository import InMemoryRenderedJobs, PostgresRenderedJobs


@dataclass
class PostProducer:
    """The post-producer's adapters, as its handlers and its workflow use them."""

    spec: ServiceSpec
    uow: UnitOfWork
    view: ConsentView  # the local view: asked while a render runs and before announcing
    gate: ConsentCheck  # the view, then the registry's authoritative answer
    store: MediaStore
    renderer: Renderer
    spec_check: SpecChecker
    signer: Signer
    jobs: RenderedJobs
    clock: Clock
    workdir: Path  # where renders happen; a folder of this process's own once started (main._claim_workdir)


def signing_material(settings: Settings) -> SigningMaterial:
    if settings.c2pa_cert_chain and settings.c2pa_private_key:
        anchor = settings.c2pa_trust_anchor or settings.c2pa_cert_chain
        return SigningMaterial(Path(settings.c2pa_cert_chain), Path(settings.c2pa_private_key), Path(anchor))
    folder = Path(settings.state_dir) / "c2pa-test-ca"  # development: a local test CA, made once
    if (folder / "chain.pem").is_file():
        return SigningMaterial(folder / "chain.pem", folder / "signer.key", folder / "ca.pem")
    return make_test_ca(folder)


def bootstrap(
    ctx: ServiceContext,
    *,
    view: ConsentView | None = None,
    gate: ConsentCheck | None = None,
    store: MediaStore | None = None,
    spec: RenderSpec | None = None,
    signing: SigningMaterial | None = None,
    renderer: Renderer | None = None,
    spec_check: SpecChecker | None = None,
    signer: Signer | None = None,
    jobs: RenderedJobs | None = None,
    clock: Clock | None = None,
    workdir: Path | None = None,
    stop_poll_s: float = 0.2,  # how often a running render looks at the consent view
) -> PostProducer:
    """The post-producer on ``ctx`` (its unit of work, settings, pool): every adapter not given is the
    real one. Without a pool, the rendered-jobs repository is in memory and nothing is signed for real
    unless ``signing`` or ``signer`` says how (no test CA is made)."""
    settings = ctx.settings
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    registry = RegistryClient(settings.consent_registry_url, settings.consent_token) if settings.consent_token else None
    if registry is not None:  # its outage is cleared by its health check, not by a job that did not ask it
        ctx.probes["consent registry"] = partial(asyncio.to_thread, registry.ping)
    if view is None:
        view = ConsentView(lambda: load_public_keys(settings, registry), service=ctx.spec.name)
    spec = spec or render_spec(settings)
    if signer is None:
        if signing is None:
            signing = signing_material(settings) if ctx.pool is not None else SigningMaterial(Path(), Path(), Path())
        signer = C2paSigner(signing)
    return PostProducer(
        spec=ctx.spec,
        uow=ctx.uow,
        view=view,
        gate=gate or ConsentGate(view, registry),
        store=store or StoreMedia(open_store(settings.storage_root)),
        renderer=renderer or FfmpegRenderer(spec, stop_poll_s),
        spec_check=spec_check or FfprobeSpecCheck(spec),
        signer=signer,
        jobs=jobs or (PostgresRenderedJobs(ctx.pool, ctx.spec.db_schema) if ctx.pool is not None else InMemoryRenderedJobs()),
        clock=clock or now_utc,
        workdir=workdir or Path(settings.state_dir) / "post-work",
    )
