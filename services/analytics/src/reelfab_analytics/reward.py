"""The reward of a post from one engagement reading, and the checks a reading must pass first.

The reward is a rate in [0, 1] (posteriors.py says why that makes the posteriors Beta):

- ``auto`` (the default): the completion rate where the platform reports it — the share of views
  watched to the end, the signal least distorted by audience size — else interactions per view,
  ``(likes + comments + shares) / views``;
- ``completion``: the completion rate only; a reading without one carries no reward;
- ``interactions``: interactions per view only.

A reading with no views carries no reward: nothing was seen (a completion rate of no views is no
evidence either). How much a reward weighs is posteriors.py's ``post_trials``.

What is refused (``BadEngagement``, a PermanentError the bus dead-letters with this message, naming
the field) is what no platform can report: a negative counter, a counter above
``analytics_max_count``, NaN or infinity in a double, a completion rate outside [0, 1], a negative
watch time, a reading observed more than ``analytics_max_clock_skew_s`` (default 5 minutes) ahead of
this service's clock, and an interaction counter out of proportion to the views.

The proportion: each of likes, comments and shares may be at most

    ``analytics_max_interactions_per_view`` × views × 1.05 + 10

(``allowed_interactions``), that is with the default of 1.0 per view, at most the views plus a
counting-lag slack of 5 % of them plus 10. One like (comment, share) per view is the realistic
ceiling: a viewer likes a post once. The slack covers what makes a counter honestly run a little
ahead of the views: platforms count a view after a minimum watch time but a like at once, the
counters are read at slightly different moments, and a share can come from someone whose view was
not counted; the + 10 lets a post whose first views are not counted yet hold a few interactions.
Anything beyond is a broken counter or a forged reading, and since the reward clips at 1, letting
it through would count an inflated post as a perfect one. A reading inside the slack whose
interactions exceed its views still clips to 1."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from reelfab.errors import PermanentError

COUNTERS = ("views", "likes", "comments", "shares")
INTERACTIONS = ("likes", "comments", "shares")
MAX_PER_VIEW = 1.0  # interactions of one kind per view (analytics_max_interactions_per_view's default)
LAG_SHARE = 0.05  # counting-lag slack on top of that: 5 % of the allowed count ...
LAG_COUNT = 10  # ... plus 10
MAX_CLOCK_SKEW_S = 300.0  # how far ahead of our clock a reading's observed_at may be (analytics_max_clock_skew_s)


class BadEngagement(PermanentError):
    """An engagement reading no platform can report; the message names the field."""


class RewardMode(StrEnum):
    AUTO = "auto"
    COMPLETION = "completion"
    INTERACTIONS = "interactions"

    @classmethod
    def parse(cls, value: str) -> RewardMode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"analytics_reward {value!r} is not one of "
                             f"{', '.join(m.value for m in cls)}") from None


class Reading(Protocol):
    """What the reward reads of an EngagementObserved (the generated record, or any object alike)."""

    @property
    def post_id(self) -> str: ...
    @property
    def views(self) -> int: ...
    @property
    def likes(self) -> int: ...
    @property
    def comments(self) -> int: ...
    @property
    def shares(self) -> int: ...
    @property
    def avg_watch_time_s(self) -> float | None: ...
    @property
    def completion_rate(self) -> float | None: ...


def allowed_interactions(views: int, max_per_view: float = MAX_PER_VIEW) -> float:
    """The most likes (or comments, or shares) a reading of ``views`` views may hold (see above)."""
    return max_per_view * max(views, 0) * (1.0 + LAG_SHARE) + LAG_COUNT


def check_observed_at(post_id: str, observed_at: datetime, now: datetime,
                      max_skew: timedelta = timedelta(seconds=MAX_CLOCK_SKEW_S)) -> None:
    """BadEngagement naming ``observed_at`` when the reading claims to come from the future (beyond
    ``max_skew`` of clock skew): it would otherwise stay the post's newest reading until then."""
    if observed_at > now + max_skew:
        raise BadEngagement(f"engagement of post {post_id}: observed_at is {observed_at.isoformat()}, "
                            f"{_ahead(observed_at - now)} ahead of this service's clock ({now.isoformat()}), more "
                            f"than the {max_skew.total_seconds():g} s of clock skew allowed: a reading from the future")


def _ahead(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds:.0f} s"


def check_reading(reading: Reading, max_count: int, max_per_view: float = MAX_PER_VIEW) -> None:
    """BadEngagement naming the first field no platform could have reported."""
    where = f"engagement of post {reading.post_id}"
    for name in COUNTERS:
        value = getattr(reading, name)
        if value < 0:
            raise BadEngagement(f"{where}: {name} is {value}; a counter is never negative")
        if value > max_count:
            raise BadEngagement(f"{where}: {name} is {value}, above analytics_max_count {max_count}: absurd")
    allowed = allowed_interactions(reading.views, max_per_view)
    for name in INTERACTIONS:
        value = getattr(reading, name)
        if value > allowed:
            raise BadEngagement(f"{where}: {name} is {value} with {reading.views} views, more than "
                                f"{max_per_view:g} per view allows (at most {allowed:g} with the counting-lag "
                                f"slack of {LAG_SHARE:.0%} + {LAG_COUNT}): absurd")
    for name in ("avg_watch_time_s", "completion_rate"):
        number = getattr(reading, name)
        if number is not None and not math.isfinite(number):
            raise BadEngagement(f"{where}: {name} is {number}; a reported figure is a finite number")
    if reading.avg_watch_time_s is not None and reading.avg_watch_time_s < 0:
        raise BadEngagement(f"{where}: avg_watch_time_s is {reading.avg_watch_time_s}; a watch time is never negative")
    if reading.completion_rate is not None and not 0.0 <= reading.completion_rate <= 1.0:
        raise BadEngagement(f"{where}: completion_rate is {reading.completion_rate}, outside [0, 1]")


def interactions_per_view(reading: Reading) -> float:
    return (reading.likes + reading.comments + reading.shares) / max(reading.views, 1)


def reward_of(reading: Reading, mode: RewardMode) -> float | None:
    """The reading's reward in [0, 1], or None when it carries none (nothing seen, or no completion
    rate where ``mode`` asks for one). Call ``check_reading`` first."""
    if reading.views <= 0:
        return None
    if mode is RewardMode.COMPLETION:
        raw = reading.completion_rate
    elif mode is RewardMode.INTERACTIONS:
        raw = interactions_per_view(reading)
    else:
        raw = reading.completion_rate if reading.completion_rate is not None else interactions_per_view(reading)
    return None if raw is None else min(max(raw, 0.0), 1.0)
