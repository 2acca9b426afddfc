"""The rules that flag subjects and templates, pure and configurable (settings ``analytics_*``).
Every flag they raise is audited (who, what, why, evidence) and announced as SubjectFlagged.

- **Strikes**: a job.failed whose ``reason_code`` is one of ``analytics_strike_reasons`` (moderation:
  spam risk, a rejection, a content violation) is a strike against the job's subject, and against its
  template where the job's lineage is known. Strikes count per distinct JOB, not per failure event: a
  job announced failed several times (a retried stage, a redelivery under a new event id, a second
  moderation pass) is one strike, at its first failure; every failure is still kept. ``analytics_strike_limit``
  distinct jobs struck within any span of ``analytics_strike_window_s`` (by when each job first
  failed, so a replay decides the same) disable the subject or template: one DISABLED flag, not one per
  further strike; its evidence lists those jobs. A strike that arrives late still counts in the window
  it belongs to.
- **Elimination**: a template whose posterior mean is below ``analytics_elimination_mean`` after at
  least ``analytics_elimination_min_posts`` posts becomes an ELIMINATION_CANDIDATE, once: reported,
  not disabled (a person decides). Should its mean recover to the threshold or above, the candidacy is
  CLEARED. A disabled template is not judged any more."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reelfab.settings import Settings

from .posteriors import Posterior

FACE, TEMPLATE_KIND = "FACE", "TEMPLATE"  # SubjectFlagged.subject_kind
DISABLED, ELIMINATION_CANDIDATE, CLEARED = "DISABLED", "ELIMINATION_CANDIDATE", "CLEARED"  # .action
STRIKE_RULE, ELIMINATION_RULE = "strikes", "elimination"


@dataclass(frozen=True)
class Flag:
    """A rule's decision about one subject or template, with what it rests on."""

    kind: str  # FACE | TEMPLATE
    target_id: str
    action: str  # DISABLED | ELIMINATION_CANDIDATE | CLEARED
    rule: str
    reason: str
    evidence: dict[str, Any]

    @property
    def evidence_json(self) -> str:
        return json.dumps(self.evidence, sort_keys=True, default=str)


# ------------------------------------------------------------------------------ strikes


@dataclass(frozen=True)
class Strike:
    event_id: str
    kind: str
    target_id: str
    job_id: str
    reason_code: str
    occurred_at: datetime


@dataclass(frozen=True)
class StrikeRule:
    reasons: frozenset[str]
    limit: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> StrikeRule:
        reasons = frozenset(r.strip() for r in settings.analytics_strike_reasons.split(",") if r.strip())
        return cls(reasons, settings.analytics_strike_limit, timedelta(seconds=settings.analytics_strike_window_s))

    def is_strike(self, reason_code: str) -> bool:
        return reason_code in self.reasons

    def span(self, at: datetime) -> tuple[datetime, datetime]:
        """The strikes that can share a window with one at ``at``."""
        return at - self.window, at + self.window

    def reached(self, strikes: Sequence[Strike]) -> list[Strike] | None:
        """The first ``limit`` distinct jobs' strikes lying within one window, if any do (``strikes``:
        every strike of one target that can share a window with the newest, and every other failure of
        those jobs; a job counts once, at its first failure); None otherwise."""
        ordered = first_per_job(strikes)
        for i in range(len(ordered) - self.limit + 1):
            if ordered[i + self.limit - 1].occurred_at - ordered[i].occurred_at <= self.window:
                return ordered[i: i + self.limit]
        return None

    def judge(self, kind: str, target_id: str, strikes: Sequence[Strike], current: str | None) -> Flag | None:
        """DISABLED when the strikes reach the limit within the window and the target is not
        disabled already (``current``: its flag now)."""
        if current == DISABLED:
            return None
        window = self.reached(strikes)
        if window is None:
            return None
        reason = (f"{self.limit} moderation strikes within {_duration(self.window)} "
                  f"({', '.join(sorted({s.reason_code for s in window}))}) on {self.limit} distinct jobs")
        failures = {s.job_id: 0 for s in window}
        for s in strikes:
            if s.job_id in failures:
                failures[s.job_id] += 1
        evidence = {
            "strikes": [{"job_id": s.job_id, "reason_code": s.reason_code, "occurred_at": s.occurred_at.isoformat(),
                         "event_id": s.event_id, "failures": failures[s.job_id]} for s in window],
            "jobs": [s.job_id for s in window],
            "limit": self.limit, "window_s": self.window.total_seconds(), "reasons": sorted(self.reasons),
        }
        return Flag(kind, target_id, DISABLED, STRIKE_RULE, reason, evidence)


def first_per_job(strikes: Sequence[Strike]) -> list[Strike]:
    """One strike per job, its first failure (by when it happened, then event id), in time order."""
    first: dict[str, Strike] = {}
    for strike in sorted(strikes, key=lambda s: (s.occurred_at, s.event_id)):
        first.setdefault(strike.job_id, strike)
    return list(first.values())


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            count = seconds / size
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ elimination


@dataclass(frozen=True)
class EliminationRule:
    threshold: float
    min_posts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EliminationRule:
        return cls(settings.analytics_elimination_mean, settings.analytics_elimination_min_posts)

    def judge(self, template_id: str, posterior: Posterior, current: str | None) -> Flag | None:
        """ELIMINATION_CANDIDATE once the template's mean is under the threshold after enough posts;
        CLEARED once a candidate's mean is back at the threshold or above; else nothing."""
        if current == DISABLED:
            return None
        low, high = posterior.interval()
        evidence = {"posts": posterior.pulls, "alpha": posterior.alpha, "beta": posterior.beta,
                    "mean": posterior.mean, "ci95": [low, high], "threshold": self.threshold,
                    "min_posts": self.min_posts}
        under = posterior.mean < self.threshold
        if current != ELIMINATION_CANDIDATE and under and posterior.pulls >= self.min_posts:
            reason = (f"posterior mean {posterior.mean:.4f} < {self.threshold:g} after {posterior.pulls} posts")
            return Flag(TEMPLATE_KIND, template_id, ELIMINATION_CANDIDATE, ELIMINATION_RULE, reason, evidence)
        if current == ELIMINATION_CANDIDATE and not under:
            reason = f"posterior mean {posterior.mean:.4f} back at or above {self.threshold:g}"
            return Flag(TEMPLATE_KIND, template_id, CLEARED, ELIMINATION_RULE, reason, evidence)
        return None
