"""post-producer service: wiring only (DESIGN.md layout). The media work lives in reelfab.media
(render, spec_check, c2pa_sign, titles); consent at the point of use through reelfab.consent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reelfab.consent.client import RegistryClient
from reelfab.consent.gate import ConsentGate, load_public_keys
from reelfab.consent.view import ConsentView
from reelfab.media.c2pa_sign import SigningMaterial, make_test_ca
from reelfab.media.render import RenderSpec
from reelfab.media.workroot import claim_work_root
from reelfab.service import ServiceContext, ServiceSpec, entry_point
from reelfab.settings import Settings
from reelfab.storage import open_store

from . import handlers

SPEC = ServiceSpec(
    name="post-producer",
    package=__package__ or "reelfab_post_producer",
    schema="post_producer",
    default_port=8084,
    consumes=(
        "reelfab.consent.changed.v1",
        "reelfab.swap.completed.v1",
    ),
    produces=(
        "reelfab.render.completed.v1",
        "reelfab.job.failed.v1",
    ),
    description="Mezzanine in; platform-spec, labelled, signed video out.",
)


def signing_material(settings: Settings) -> SigningMaterial:
    if settings.c2pa_cert_chain and settings.c2pa_private_key:
        anchor = settings.c2pa_trust_anchor or settings.c2pa_cert_chain
        return SigningMaterial(Path(settings.c2pa_cert_chain), Path(settings.c2pa_private_key), Path(anchor))
    folder = Path(settings.state_dir) / "c2pa-test-ca"  # development: a local test CA, made once
    if (folder / "chain.pem").is_file():
        return SigningMaterial(folder / "chain.pem", folder / "signer.key", folder / "ca.pem")
    return make_test_ca(folder)


def wire(ctx: ServiceContext) -> None:
    settings = ctx.settings
    registry = RegistryClient(settings.consent_registry_url, settings.consent_token) if settings.consent_token else None
    view = ConsentView(lambda: load_public_keys(settings, registry), service=SPEC.name)
    post = handlers.PostProducer(
        ctx=ctx, view=view, gate=ConsentGate(view, registry), store=open_store(settings.storage_root),
        spec=RenderSpec(reframe=settings.render_reframe, label_position=settings.render_label_position,  # type: ignore[arg-type]
                        loudness_lufs=settings.render_loudness_lufs),
        signing=signing_material(settings) if ctx.pool is not None else SigningMaterial(Path(), Path(), Path()),
        workdir=Path(settings.state_dir) / "post-work",
    )
    view.listeners.append(lambda terms: handlers.on_consent_withdrawn(post, terms))
    view.subscribe(ctx.bus)  # a group of its own: every instance reads every lease
    ctx.bus.subscribe("reelfab.swap.completed.v1", handlers.on_swap_completed(post))
    ctx.extras["post"] = post
    ctx.on_start.append(lambda: _claim_workdir(post))
    ctx.on_start.append(lambda: _catch_up(view, ctx))


async def _claim_workdir(post: handlers.PostProducer) -> None:
    """Before the first job: remove the work folders a killed post-producer left (half-rendered
    MP4s) and work in a folder of this process's own, so replicas sharing state_dir never delete
    each other's (reelfab.media.workroot)."""
    post.workdir = await asyncio.to_thread(claim_work_root, post.workdir)


async def _catch_up(view: ConsentView, ctx: ServiceContext) -> None:
    await view.catch_up(ctx.bus)  # before the first job: judge nothing on an empty view


main = entry_point(SPEC, wire)
