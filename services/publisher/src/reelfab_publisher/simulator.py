"""Seeded engagement for dry-run posts, so the learning loop has something to learn in a demo or a test.

The model, kept small enough to reason about:

- every (subject, template) pair has a true rate ``true_rate = subject_rate × template_factor``, clipped
  to [``MIN_RATE``, ``MAX_RATE``]: the subject's base rate is log-normal around 6 % (nine in ten between 2 %
  and 16 %), the template's factor log-normal around 1; both are fixed by (seed, id), and ``rates`` can
  pin either (``"subject:ada": 0.3`` sets Ada's base rate, ``"template:t1": 1.5`` the template's factor);
- a post's views follow the saturating curve ``views(t) = V · (1 − exp(−t / saturation))`` with
  ``V = views_per_hour × saturation_hours`` (so ``views_per_hour`` is the launch speed) times a
  per-post log-normal factor;
- its likes, comments and shares are fixed fractions of its views: ``rate × (1, 0.08, 0.12)`` each times
  its own per-post log-normal factor of mean 1, so the mean of likes/views over many posts is the true
  rate; the three fractions are scaled down together if they would add up to more than one;
- its completion rate (``COMPLETION_FLOOR + COMPLETION_SLOPE × rate``, noisy, in [0, 1]) rises with the
  rate too: analytics' default reward reads the completion rate first, so a better pair must score
  better there as well; the average watch time follows from it and the video's duration.

Every random draw is a standard normal read off sha256(seed, what, key), never Python's ``hash()`` nor a
generator's stream, so a reading depends on its arguments alone, across processes and library versions.
Because a post's fractions are fixed and counts are floors of fractions of the (non-decreasing) views,
counters never decrease as time passes, and likes + comments + shares never exceed views."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist

MIN_RATE, MAX_RATE = 0.001, 0.95
SUBJECT_MEDIAN_RATE, SUBJECT_SPREAD = 0.06, 0.6  # log-normal: ~90 % of subjects between 2 % and 16 %
TEMPLATE_SPREAD = 0.3
COMMENT_SHARE, SHARE_SHARE = 0.08, 0.12  # comments and shares per like, on average
COMPLETION_FLOOR, COMPLETION_SLOPE = 0.1, 2.0
PARTIAL_WATCH = 0.35  # share of the video an incomplete view watches, on average
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Reading:
    views: int
    likes: int
    comments: int
    shares: int
    completion_rate: float
    avg_watch_time_s: float


def parse_rates(text: str) -> dict[str, float]:
    """``"subject:ada=0.3,template:t1=1.5"`` as the ``rates`` mapping (REELFAB_PUBLISHER_SIMULATOR_RATES);
    ValueError naming the entry that is not ``kind:id=number``."""
    rates: dict[str, float] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        key, sep, number = entry.partition("=")
        try:
            rates[key.strip()] = float(number) if sep else math.nan
        except ValueError:
            raise ValueError(f"simulator rate {entry!r}: {number.strip()!r} is not a number") from None
        if not sep or not math.isfinite(rates[key.strip()]):
            raise ValueError(f"simulator rate {entry!r} is not 'subject:<id>=<rate>' or 'template:<id>=<factor>'")
    return rates


class EngagementSimulator:
    def __init__(self, seed: int, *, views_per_hour: float = 400.0, saturation_hours: float = 48.0,
                 noise: float = 0.15, rates: Mapping[str, float] | None = None) -> None:
        if views_per_hour < 0 or saturation_hours <= 0 or noise < 0:
            raise ValueError("views_per_hour and noise must be >= 0 and saturation_hours > 0")
        self.seed = seed
        self.views_per_hour = views_per_hour
        self.saturation_hours = saturation_hours
        self.noise = noise
        self.rates = dict(rates or {})
        for key, value in self.rates.items():
            kind, _, ident = key.partition(":")
            if kind not in ("subject", "template") or not ident:
                raise ValueError(f"rates key {key!r} is not 'subject:<id>' or 'template:<id>'")
            if not (0 < value < 1 if kind == "subject" else 0 < value < math.inf):
                raise ValueError(f"rates[{key!r}] = {value} is out of range (a subject's rate is in (0, 1), "
                                 "a template's factor is positive)")

    def true_rate(self, subject_id: str, template_id: str) -> float:
        """The pair's true engagement rate (expected likes per view), in (0, 1)."""
        subject = self.rates.get(f"subject:{subject_id}")
        if subject is None:
            subject = SUBJECT_MEDIAN_RATE * math.exp(SUBJECT_SPREAD * self._z("subject", subject_id))
        template = self.rates.get(f"template:{template_id}")
        if template is None:
            template = math.exp(TEMPLATE_SPREAD * self._z("template", template_id) - TEMPLATE_SPREAD ** 2 / 2)
        return min(max(subject * template, MIN_RATE), MAX_RATE)

    def reading(self, *, post_id: str, subject_id: str, template_id: str, published_at: datetime,
                at: datetime, duration_s: float = 20.0) -> Reading:
        """The post's cumulative counters as read at ``at`` (all zeros before ``published_at``)."""
        if published_at.tzinfo is None or at.tzinfo is None:
            raise ValueError("published_at and at must be timezone-aware")
        hours = (at - published_at).total_seconds() / 3600.0
        if hours <= 0:
            return Reading(0, 0, 0, 0, 0.0, 0.0)
        rate = self.true_rate(subject_id, template_id)
        scale = self.views_per_hour * self.saturation_hours * self._factor("views", post_id)
        views = math.floor(scale * -math.expm1(-hours / self.saturation_hours))
        if views <= 0:
            return Reading(0, 0, 0, 0, 0.0, 0.0)  # nothing seen: no watch figures either
        fractions = [rate * self._factor("likes", post_id),
                     rate * COMMENT_SHARE * self._factor("comments", post_id),
                     rate * SHARE_SHARE * self._factor("shares", post_id)]
        total = sum(fractions)
        if total > 1.0:
            fractions = [f / total for f in fractions]
        likes, comments, shares = (math.floor(f * views) for f in fractions)
        completion = COMPLETION_FLOOR + COMPLETION_SLOPE * rate * self._factor("completion", post_id)
        completion = min(max(completion, 0.0), 1.0)
        watch = duration_s * (completion + (1.0 - completion) * PARTIAL_WATCH)
        return Reading(views, likes, comments, shares, completion, watch)

    def _z(self, what: str, key: str) -> float:
        """A standard normal draw fixed by (seed, what, key)."""
        digest = hashlib.sha256(f"{self.seed}\x00{what}\x00{key}".encode()).digest()
        u = ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / 2.0 ** 53  # exact: in (0, 1), never 0 or 1
        return _NORMAL.inv_cdf(u)

    def _factor(self, what: str, post_id: str) -> float:
        """A per-post log-normal factor of mean 1 and spread ``noise``."""
        return math.exp(self.noise * self._z(what, post_id) - self.noise ** 2 / 2)
