"""The reward of a post from one engagement reading, and the checks a reading must pass first.

The reward is a rate in [0, 1] (posteriors.py says why that makes the posteriors Beta):

- ``auto`` (the default): the completion rate where the platform reports it — the share of views
  watched to the end, the signal least distorted by audience size — else interactions per view,
  ``(likes + comments + shares) / views``;
- ``completion``: the completion rate only; a reading without one carries no reward;
- ``interactions``: interactions per view only.

A reading with no views carries no reward: nothing was seen (a completion rate of no views is no
evidence either). How much a reward weighs is posteriors.py's ``post_trials``.

Interactions somewhat above views are *allowed* and clip to 1: platforms count views after a minimum
watch time but likes and shares at once, counters are read at slightly different moments, and a
share of a post counts even when the sharer's view did not, so more interactions than views is a
real (if rare) reading, not an error. What is refused (``BadEngagement``, a PermanentError the bus
dead-letters with this message, naming the field) is what no platform can report: a negative
counter, a counter above ``analytics_max_count``, a like, comment or share counter above
``MAX_PER_VIEW`` times (views + 1) (ten likes per view is a broken counter or a forged reading, not
an audience; the + 1 lets a post whose views are not counted yet hold a few), NaN or infinity in a
double, a completion rate outside [0, 1], a negative watch time."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Protocol

from reelfab.errors import PermanentError

COUNTERS = ("views", "likes", "comments", "shares")
INTERACTIONS = ("likes", "comments", "shares")
MAX_PER_VIEW = 10.0  # interactions of one kind per view above which a reading is absurd


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


def check_reading(reading: Reading, max_count: int, max_per_view: float = MAX_PER_VIEW) -> None:
    """BadEngagement naming the first field no platform could have reported."""
    where = f"engagement of post {reading.post_id}"
    for name in COUNTERS:
        value = getattr(reading, name)
        if value < 0:
            raise BadEngagement(f"{where}: {name} is {value}; a counter is never negative")
        if value > max_count:
            raise BadEngagement(f"{where}: {name} is {value}, above analytics_max_count {max_count}: absurd")
    for name in INTERACTIONS:
        value = getattr(reading, name)
        if value > max_per_view * (reading.views + 1):
            raise BadEngagement(f"{where}: {name} is {value} with {reading.views} views, more than "
                                f"{max_per_view:g} per view: absurd")
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
