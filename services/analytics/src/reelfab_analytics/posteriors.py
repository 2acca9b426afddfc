"""Per-arm posteriors: a **Beta** distribution per arm of every arm space, a post counting as
``analytics_post_weight`` Bernoulli trials at its engagement rate.

Why Beta (and not Normal-Gamma): the reward of a post (reward.py) is a rate in [0, 1] — the share
of views watched to the end, or interactions per view, clipped. A rate is what a Beta distribution
describes, and Beta is conjugate to Bernoulli trials: the update is two additions (incremental,
exact, order-free), the posterior mean ``alpha / (alpha + beta)`` stays in [0, 1] like the reward,
and the planner's Thompson sampling draws from it with one ``numpy`` call. A Normal-Gamma model would
put mass outside [0, 1] and needs a variance the rewards of a handful of posts cannot estimate.

Why a post weight: a post with reward ``r`` counts as ``w`` trials at rate ``r`` — ``alpha += w·r``,
``beta += w·(1 − r)`` with ``w = analytics_post_weight`` (default 20), capped by the post's views (a
post seen 5 times is not 20 trials' evidence). One trial per post (``w = 1``) would make a rate of
2 % and one of 40 % almost indistinguishable for dozens of posts (Beta(1.02, 1.98) against
Beta(1.4, 1.6)); one trial per *view* would make a single viral post swamp an arm, though posts
differ far more than the views within one post. ``w`` sets how many posts it takes to be sure: after
``n`` posts an arm's posterior holds about ``n·w`` trials.

What an arm keeps is ``pulls`` (how many posts contribute), ``successes`` (Σ w·r) and ``failures``
(Σ w·(1 − r)); the prior (settings ``analytics_prior_alpha``/``_beta``) is added when a posterior is
read, so changing the prior needs no rewrite of the tables:
``alpha = prior_alpha + successes``, ``beta = prior_beta + failures``.

A post contributes once, with the reward of its newest observation (counters are cumulative: the
newest read is the best estimate). A newer observation *replaces* the post's contribution (its old
trials are taken out, the new ones put in), so engagement that grows over time is never counted
twice and ``pulls`` counts posts, not reads; ``contribution_deltas`` is that replacement, as
arithmetic on the arms.

The 95 % credible interval is exact: Beta quantiles by inverting the regularised incomplete beta
function (a continued fraction, Numerical Recipes' ``betacf``), with no scipy in the service."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Prior:
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0 and math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"a Beta prior needs alpha > 0 and beta > 0, not ({self.alpha}, {self.beta})")


@dataclass(frozen=True)
class ArmStats:
    """What the arms table keeps of one arm: posts contributing and their weighted trials."""

    pulls: int = 0
    successes: float = 0.0  # sum of w * r over the posts
    failures: float = 0.0  # sum of w * (1 - r)


@dataclass(frozen=True)
class Posterior:
    alpha: float
    beta: float
    pulls: int

    @classmethod
    def of(cls, prior: Prior, stats: ArmStats) -> Posterior:
        # float drift from many replacements must never push a parameter below its prior
        return cls(prior.alpha + max(stats.successes, 0.0), prior.beta + max(stats.failures, 0.0),
                   max(stats.pulls, 0))

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, mass: float = 0.95) -> tuple[float, float]:
        """The equal-tailed credible interval holding ``mass`` of the posterior."""
        tail = (1.0 - mass) / 2.0
        return beta_quantile(tail, self.alpha, self.beta), beta_quantile(1.0 - tail, self.alpha, self.beta)


# ------------------------------------------------------------------------------ a post's contribution


def post_trials(weight: float, views: int) -> float:
    """How many Bernoulli trials one post counts as: ``analytics_post_weight``, capped by its views."""
    return float(min(weight, max(views, 0)))


@dataclass(frozen=True)
class Contribution:
    """What one post adds to the posteriors: ``trials`` trials at rate ``reward``, to one arm per space."""

    arms: Mapping[str, str]  # arm space -> arm id
    reward: float
    trials: float

    @property
    def successes(self) -> float:
        return self.trials * self.reward

    @property
    def failures(self) -> float:
        return self.trials * (1.0 - self.reward)


@dataclass(frozen=True)
class ArmDelta:
    space: str
    arm_id: str
    pulls: int
    successes: float
    failures: float


def contribution_deltas(old: Contribution | None, new: Contribution | None) -> list[ArmDelta]:
    """The changes to the arms that replace a post's ``old`` contribution by its ``new`` one: the old
    trials out of the old arms, the new trials into the new arms, merged per arm (a newer reading of
    the same post on the same arms moves successes and failures, not the pulls). Sorted by (space,
    arm), the order the repository locks rows in."""
    merged: dict[tuple[str, str], tuple[int, float, float]] = {}
    for contribution, sign in ((old, -1), (new, 1)):
        if contribution is None:
            continue
        for space, arm in contribution.arms.items():
            pulls, successes, failures = merged.get((space, arm), (0, 0.0, 0.0))
            merged[(space, arm)] = (pulls + sign, successes + sign * contribution.successes,
                                    failures + sign * contribution.failures)
    return [ArmDelta(space, arm, pulls, successes, failures)
            for (space, arm), (pulls, successes, failures) in sorted(merged.items())
            if pulls != 0 or successes != 0.0 or failures != 0.0]


# ------------------------------------------------------------------------------ Beta quantiles


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b): P(X <= x) for X ~ Beta(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_quantile(p: float, a: float, b: float) -> float:
    """The ``p``-quantile of Beta(a, b), to about 1e-12: bisection on the exact CDF (monotone, so it
    cannot fail to converge, whatever the parameters)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a quantile needs 0 <= p <= 1, not {p}")
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if beta_cdf(mid, a, b) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2.0
