"""When to read a post's engagement again.

The rule: the delay after a poll is proportional to the post's age at that poll,

    ``delay = min(max(first_s, growth × age), max_s)``

and polling stops once the post is ``horizon_s`` old (30 days by default).

Why proportional to age: engagement saturates (most views come in the first day or two), so what a poll
can learn shrinks as the post ages. A delay that is a fixed fraction of the age makes the schedule
geometric: each poll comes when the post is ``1 + growth`` times older than at the last one, so each
poll sees about the same share of the post's life pass, and the number of polls grows only with the
logarithm of the horizon. With the defaults (5 minutes first, growth 0.25, at most a day) a post is
read every 5 minutes for its first 20 minutes, every 15 minutes at one hour, every 6 hours at one day,
daily from its fourth day: 56 polls over 30 days, 24 of them in its first day. ``first_s``
keeps a young post from being polled in a burst; ``max_s`` keeps an old one in view (a late surge, a
takedown) and bounds the wait after an outage.

A post never polled is first due ``first_s`` after it was published (a reading at age 0 is all zeros).
``due`` lists what is due, most overdue first, so a backlog (after an outage, or with a quota) serves the
posts that waited longest; ``batches`` cuts the list into queries of at most ``MAX_BATCH`` ids, the most
the Display API's video query takes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

FIRST_S = 300.0
MAX_S = 86400.0
GROWTH = 0.25
HORIZON_S = 30 * 86400.0
MAX_BATCH = 20  # ids per Display API video query


def next_poll_delay(age_s: float, *, first_s: float = FIRST_S, max_s: float = MAX_S,
                    growth: float = GROWTH) -> float:
    """Seconds to wait after a poll made at ``age_s`` (the post's age then): non-decreasing in the age,
    ``first_s`` at age 0, never above ``max_s``."""
    if not 0 < first_s <= max_s or growth < 0:
        raise ValueError(f"need 0 < first_s <= max_s and growth >= 0 (first_s={first_s}, max_s={max_s}, "
                         f"growth={growth})")
    return min(max(first_s, growth * max(age_s, 0.0)), max_s)


def stop_polling(age_s: float, *, horizon_s: float = HORIZON_S) -> bool:
    """True once a post is too old to be worth reading again."""
    return age_s >= horizon_s


@dataclass(frozen=True)
class PollPlan:
    post_id: str
    due_at: datetime


def next_poll(post_id: str, published_at: datetime, last_polled_at: datetime | None, *,
              first_s: float = FIRST_S, max_s: float = MAX_S, growth: float = GROWTH) -> PollPlan:
    """When the post is next due: ``first_s`` after publication if never polled, else the delay for its
    age at the last poll after that poll (a poll stamped before publication, clock skew, counts as age 0)."""
    last = published_at if last_polled_at is None else last_polled_at
    age = (last - published_at).total_seconds()
    delay = next_poll_delay(age, first_s=first_s, max_s=max_s, growth=growth)
    return PollPlan(post_id, last + timedelta(seconds=delay))


def due(posts: Iterable[tuple[str, datetime, datetime | None]], now: datetime, *, first_s: float = FIRST_S,
        max_s: float = MAX_S, growth: float = GROWTH, horizon_s: float = HORIZON_S,
        limit: int | None = None) -> list[str]:
    """The ids of the posts (``(post_id, published_at, last_polled_at)``) due at ``now``, most overdue
    first (ties by id, so the order is stable); posts past ``horizon_s`` at ``now`` are left out; at most
    ``limit`` ids when given. Datetimes must all be timezone-aware (or all naive)."""
    plans = [next_poll(post_id, published, last, first_s=first_s, max_s=max_s, growth=growth)
             for post_id, published, last in posts
             if not stop_polling((now - published).total_seconds(), horizon_s=horizon_s)]
    ready = sorted((p for p in plans if p.due_at <= now), key=lambda p: (p.due_at, p.post_id))
    ids = [p.post_id for p in ready]
    return ids if limit is None else ids[:max(limit, 0)]


def batches(ids: Sequence[str], size: int = MAX_BATCH) -> list[list[str]]:
    """``ids`` in order, without repeats (a repeat would waste one of a query's slots), in lists of at
    most ``size``; ValueError when ``size`` is not between 1 and ``MAX_BATCH``."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size {size} is not between 1 and {MAX_BATCH} (the Display API's limit)")
    unique = list(dict.fromkeys(ids))
    return [unique[i:i + size] for i in range(0, len(unique), size)]
