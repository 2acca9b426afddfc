"""Builds the planner from its service context: the one place that knows which adapters are live
(PostgreSQL or in memory, the consent view, the catalogue, the clock). Unit tests pass fakes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from reelfab.bus import now_utc
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.consent.client import RegistryClient
from reelfab.consent.gate import load_public_keys
from reelfab.consent.view import ConsentView
from reelfab.service import ServiceContext, ServiceSpec
from reelfab.settings import Settings

from .catalogue import CaptionStyle, caption_styles
from .catalogue_store import CatalogueStore, InMemoryCatalogueStore, PostgresCatalogueStore
from .model_rules import manifest_licences, parse_rules
from .plan import PlanConfig
from .policy import Policy
from .repository import InMemoryPlannerStore, PlannerStore, PostgresPlannerStore


@dataclass
class Planner:
    """The planner's adapters and what it keeps in memory between events."""

    spec: ServiceSpec
    uow: UnitOfWork
    view: ConsentView
    store: PlannerStore
    catalogue: CatalogueStore
    styles: list[CaptionStyle]
    config: PlanConfig
    clock: Callable[[], datetime] = now_utc
    policy: Policy = field(default_factory=Policy)
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))


def plan_config(settings: Settings) -> PlanConfig:
    return PlanConfig(
        platform=settings.planner_platform,
        commercial=settings.commercial_mode,
        max_share=settings.planner_max_share,
        backend=settings.face_backend,
        model_rules=parse_rules(settings.planner_model_rules),
        licences=manifest_licences(),
        trend_priority=settings.planner_trend_priority,
        trend_max_jobs=settings.planner_trend_max_jobs,
        subjects=frozenset(s.strip() for s in settings.planner_subjects.split(",") if s.strip()) or None,
    )


def bootstrap(
    ctx: ServiceContext,
    *,
    view: ConsentView | None = None,
    store: PlannerStore | None = None,
    catalogue: CatalogueStore | None = None,
    styles: list[CaptionStyle] | None = None,
    config: PlanConfig | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Planner:
    """The planner on ``ctx``: every adapter not given is the real one (PostgreSQL when the context has a
    pool, else in memory)."""
    settings = ctx.settings
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    if view is None:
        registry = RegistryClient(settings.consent_registry_url, settings.consent_token) if settings.consent_token else None
        view = ConsentView(lambda: load_public_keys(settings, registry), service=ctx.spec.name)
    schema = ctx.spec.db_schema
    return Planner(
        spec=ctx.spec,
        uow=ctx.uow,
        view=view,
        store=store or (PostgresPlannerStore(ctx.pool, schema) if ctx.pool is not None else InMemoryPlannerStore()),
        catalogue=catalogue or (PostgresCatalogueStore(ctx.pool, schema) if ctx.pool is not None else InMemoryCatalogueStore()),
        styles=styles if styles is not None else caption_styles(settings.planner_caption_styles),
        config=config or plan_config(settings),
        clock=clock or now_utc,
    )
