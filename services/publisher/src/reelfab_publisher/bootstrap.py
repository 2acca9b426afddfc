"""Builds the publisher from its service context: the one place that knows which adapters are live.
``main.wire`` calls ``bootstrap(ctx)`` for the real ones (PostgreSQL, the TikTok client at
REELFAB_TIKTOK_API_URL, the dry-run folder, the consent view and gate); tests pass their own client
(pointed at the emulator), clock or hooks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncpg

from reelfab.bus import Bus, now_utc
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.consent.client import RegistryClient
from reelfab.consent.gate import ConsentGate, load_public_keys
from reelfab.consent.view import ConsentView
from reelfab.errors import StackError
from reelfab.service import ServiceContext, ServiceSpec
from reelfab.settings import Settings
from reelfab.storage import FileStore, open_store

from .accounts import AccountTokens, TokenCipher
from .dryrun import DryRunPlatform
from .repository import PublisherRepository
from .simulator import EngagementSimulator, parse_rates
from .tiktok_api import TikTokClient

Clock = Callable[[], datetime]


@dataclass
class Publisher:
    """The publisher's adapters, as its handlers, the poster and the review desk use them."""

    spec: ServiceSpec
    settings: Settings
    uow: UnitOfWork
    pool: asyncpg.Pool
    outbox: Outbox
    bus: Bus
    repo: PublisherRepository
    view: ConsentView
    gate: Any  # ConsentGate: the view, then the registry's authoritative answer
    store: FileStore
    client: TikTokClient | None
    tokens: AccountTokens
    dryrun: DryRunPlatform
    simulator: EngagementSimulator
    clock: Clock
    worker_id: str = field(default_factory=lambda: f"publisher-{uuid.uuid4().hex[:8]}")
    claim_lease_s: float = 60.0  # a claimed job is this worker's this long, renewed while it works on it
    # test hooks: called after the init is persisted / after each chunk is persisted (a kill injected here)
    after_init: Callable[[str], Awaitable[None]] | None = None
    after_chunk: Callable[[str, int], Awaitable[None]] | None = None


class _NoDatabase:
    """A context without a pool (the AsyncAPI document wires every service that way): the publisher is
    wired, but its queue lives in PostgreSQL, so any use says so."""

    def __getattr__(self, name: str) -> Any:
        raise StackError("the publisher keeps its review queue in PostgreSQL: this context has no database pool")


def tiktok_client(settings: Settings) -> TikTokClient | None:
    """The client, when the app's credentials are set (without them only dry-run accounts can post)."""
    if not settings.tiktok_client_key or not settings.tiktok_client_secret:
        return None
    return TikTokClient(settings.tiktok_api_url, client_key=settings.tiktok_client_key,
                        client_secret=settings.tiktok_client_secret)


def bootstrap(
    ctx: ServiceContext,
    *,
    view: ConsentView | None = None,
    gate: Any = None,
    client: TikTokClient | None = None,
    clock: Clock | None = None,
    dryrun_dir: Path | None = None,
) -> Publisher:
    settings = ctx.settings
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    registry = RegistryClient(settings.consent_registry_url, settings.consent_token) if settings.consent_token else None
    if registry is not None:
        ctx.probes["consent registry"] = partial(asyncio.to_thread, registry.ping)
    if view is None:
        view = ConsentView(lambda: load_public_keys(settings, registry), service=ctx.spec.name)
    clock = clock or now_utc
    pool = ctx.pool if ctx.pool is not None else cast("asyncpg.Pool", _NoDatabase())
    repo = PublisherRepository(pool, ctx.spec.db_schema)
    client = client or tiktok_client(settings)
    folder = dryrun_dir or settings.publisher_dryrun_dir or Path(settings.state_dir) / "dryrun-posts"
    return Publisher(
        spec=ctx.spec, settings=settings, uow=ctx.uow, pool=pool, outbox=ctx.outbox, bus=ctx.bus, repo=repo,
        view=view, gate=gate or ConsentGate(view, registry), store=open_store(settings.storage_root), client=client,
        tokens=AccountTokens(repo, TokenCipher.from_settings(settings), client, clock=clock,
                             margin_s=settings.publisher_refresh_margin_s),
        dryrun=DryRunPlatform(folder, clock=clock), simulator=EngagementSimulator(
            settings.publisher_simulator_seed, views_per_hour=settings.publisher_simulator_views_per_hour,
            rates=parse_rates(settings.publisher_simulator_rates)),
        clock=clock, claim_lease_s=settings.publisher_claim_lease_s,
    )
