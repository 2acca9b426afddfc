"""Builds analytics from its service context: the one place that knows which adapters are live
(PostgreSQL with a pool, the in-memory twin without) and reads the rules' settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from reelfab.bus import now_utc
from reelfab.bus.unit_of_work import UnitOfWork
from reelfab.service import ServiceContext, ServiceSpec

from .posteriors import Prior
from .repository import InMemoryRepository, PostgresRepository, Repository
from .reward import RewardMode
from .rules import EliminationRule, StrikeRule

Clock = Callable[[], datetime]


@dataclass
class Analytics:
    """What analytics' handlers and its policy flusher work with."""

    spec: ServiceSpec
    uow: UnitOfWork
    repo: Repository
    reward: RewardMode
    prior: Prior
    post_weight: float  # Bernoulli trials per post (posteriors.py)
    strikes: StrikeRule
    elimination: EliminationRule
    max_count: int
    max_per_view: float  # likes, comments, shares per view (reward.allowed_interactions)
    max_skew: timedelta  # how far ahead of ``clock`` a reading's observed_at may be
    clock: Clock


def bootstrap(ctx: ServiceContext, *, repo: Repository | None = None, clock: Clock | None = None) -> Analytics:
    """Analytics on ``ctx``: its tables in PostgreSQL when the context has a pool, else in memory.
    A setting out of range (an unknown reward) raises ValueError naming it, before anything runs."""
    settings = ctx.settings
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    if repo is None:
        repo = PostgresRepository(ctx.pool, ctx.spec.db_schema) if ctx.pool is not None else InMemoryRepository()
    return Analytics(
        spec=ctx.spec,
        uow=ctx.uow,
        repo=repo,
        reward=RewardMode.parse(settings.analytics_reward),
        prior=Prior(settings.analytics_prior_alpha, settings.analytics_prior_beta),
        post_weight=settings.analytics_post_weight,
        strikes=StrikeRule.from_settings(settings),
        elimination=EliminationRule.from_settings(settings),
        max_count=settings.analytics_max_count,
        max_per_view=settings.analytics_max_interactions_per_view,
        # not a setting yet: read it should one be added, else reward.py's bound
        max_skew=timedelta(seconds=settings.analytics_max_clock_skew_s),
        clock=clock or now_utc,
    )
