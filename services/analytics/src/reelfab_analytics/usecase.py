"""Analytics' workflow over its repository, one function per event kind, each run inside the unit
of work of the event (``conn``: its connection). They return the flags to announce; the handlers
publish them on the same transaction. The decisions are the domain modules': posts.py (lineage,
newest reading), posteriors.py (contribution replacement), rules.py (strikes, elimination)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reelfab.contracts.arms import TEMPLATE
from reelfab.contracts.generated.records import (
    EngagementObserved,
    JobFailed,
    PublishCompleted,
    SubjectFlagged,
)

from .bootstrap import Analytics
from .posteriors import Posterior, contribution_deltas, post_trials
from .posts import ENGAGEMENT, PUBLISH, Lineage, Observation, Post, check_publication
from .reward import check_observed_at, check_reading, reward_of
from .rules import ELIMINATION_RULE, FACE, STRIKE_RULE, TEMPLATE_KIND, Flag, Strike

COUNTED, STALE, UNATTRIBUTED, NO_REWARD = "counted", "stale", "unattributed", "no_reward"


# ------------------------------------------------------------------------------ checks before any write


def lineage_of_publication(record: PublishCompleted) -> Lineage:
    """The post's lineage; BadPublication / BadArm (dead-lettered) naming an impossible
    ``consent_version`` or a malformed ``arm_id``."""
    check_publication(job_id=record.job_id, post_id=record.post_id, consent_version=record.consent_version)
    lineage = Lineage.named(PUBLISH, job_id=record.job_id, subject_id=record.subject_id,
                            template_id=record.template_id, arm_id=record.arm_id)
    assert lineage is not None  # a publication always names its subject
    return lineage


@dataclass(frozen=True)
class Reading:
    """A checked engagement reading: its reward, how many trials it counts as, the lineage it names."""

    record: EngagementObserved
    reward: float | None
    trials: float
    lineage: Lineage | None


def checked_reading(analytics: Analytics, record: EngagementObserved) -> Reading:
    """BadEngagement / BadArm (PermanentErrors naming the field) for what no platform can report."""
    check_reading(record, analytics.max_count, analytics.max_per_view)
    check_observed_at(record.post_id, record.observed_at, analytics.clock(), analytics.max_skew)
    lineage = Lineage.named(ENGAGEMENT, job_id=record.job_id, subject_id=record.subject_id,
                            template_id=record.template_id, arm_id=record.arm_id)
    reward = reward_of(record, analytics.reward)
    trials = post_trials(analytics.post_weight, record.views) if reward is not None else 0.0
    return Reading(record, reward, trials, lineage)


# ------------------------------------------------------------------------------ the events


async def publication(analytics: Analytics, conn: Any, record: PublishCompleted, lineage: Lineage,
                      event_id: str) -> list[Flag]:
    """publish.completed names the post's lineage: the readings already kept are attributed (or
    re-attributed, should a reading have named other arms). PostReused (dead-lettered, nothing
    written) when another job published the post already."""
    post = await analytics.repo.lock_post(conn, record.post_id)
    post = post.published(lineage, record.platform, record.published_at)
    await analytics.repo.save_post(conn, post)
    return await _settle(analytics, conn, post, event_id)


@dataclass(frozen=True)
class Observed:
    outcome: str  # COUNTED | STALE | UNATTRIBUTED | NO_REWARD
    flags: list[Flag]


async def observation(analytics: Analytics, conn: Any, reading: Reading, event_id: str) -> Observed:
    """An engagement reading is kept; when it is the post's newest, its reward replaces the post's
    contribution to the posteriors (once the post's lineage is known)."""
    record = reading.record
    post = await analytics.repo.lock_post(conn, record.post_id)
    await analytics.repo.add_observation(conn, Observation(
        event_id, record.post_id, record.observed_at, record.views, record.likes, record.comments, record.shares,
        record.avg_watch_time_s, record.completion_rate, reading.reward, reading.trials))
    newer = post.is_newer(record.observed_at)
    updated = post.read(record.observed_at, reading.reward, reading.trials, reading.lineage, record.platform)
    if updated != post:
        await analytics.repo.save_post(conn, updated)
    flags = await _settle(analytics, conn, updated, event_id)
    if reading.reward is None:
        outcome = NO_REWARD
    elif not newer:
        outcome = STALE
    elif not updated.attributed:
        outcome = UNATTRIBUTED
    else:
        outcome = COUNTED
    return Observed(outcome, flags)


@dataclass(frozen=True)
class Struck:
    targets: list[tuple[str, str]]  # (kind, target) the strike counted against
    flags: list[Flag]


async def failure(analytics: Analytics, conn: Any, record: JobFailed, event_id: str) -> Struck:
    """A job.failed with a strike reason: a strike against the job's subject (the event's, else the
    lineage's) and its template (where the job's post is known); the strike rule may disable either."""
    lineage = await analytics.repo.lineage_of_job(conn, record.job_id)
    subject = record.subject_id or (lineage.subject if lineage else None)
    template = lineage.template if lineage else None
    targets = [(kind, target) for kind, target in ((FACE, subject), (TEMPLATE_KIND, template)) if target]
    flags = []
    for kind, target in targets:  # FACE before TEMPLATE: every strike locks flags in one order
        current = await analytics.repo.lock_flag(conn, kind, target)
        await analytics.repo.add_strike(conn, Strike(event_id, kind, target, record.job_id, record.reason_code,
                                                     record.occurred_at))
        since, until = analytics.strikes.span(record.occurred_at)
        near = await analytics.repo.strikes_near(conn, kind, target, since, until)
        flag = analytics.strikes.judge(kind, target, near, current)
        if flag is not None:
            await analytics.repo.record_flag(conn, flag, actor=f"{analytics.spec.name}/{STRIKE_RULE}",
                                             event_id=event_id)
            flags.append(flag)
    return Struck(targets, flags)


async def _settle(analytics: Analytics, conn: Any, post: Post, event_id: str) -> list[Flag]:
    """Replace what the post contributed by what it contributes now; judge the templates touched."""
    old = await analytics.repo.contribution(conn, post.post_id)
    new = post.contribution()
    deltas = contribution_deltas(old, new)
    if not deltas:
        return []
    await analytics.repo.apply(conn, deltas)
    await analytics.repo.set_contribution(conn, post.post_id, new)
    flags = []
    for template in sorted({d.arm_id for d in deltas if d.space == TEMPLATE}):
        current = await analytics.repo.lock_flag(conn, TEMPLATE_KIND, template)
        posterior = Posterior.of(analytics.prior, await analytics.repo.arm(conn, TEMPLATE, template))
        flag = analytics.elimination.judge(template, posterior, current)
        if flag is not None:
            await analytics.repo.record_flag(conn, flag, actor=f"{analytics.spec.name}/{ELIMINATION_RULE}",
                                             event_id=event_id)
            flags.append(flag)
    return flags


def flag_record(flag: Flag, *, event_id: str, now: datetime, producer: str, trace_id: str | None) -> SubjectFlagged:
    """The SubjectFlagged that announces ``flag`` (evidence as JSON)."""
    return SubjectFlagged.model_validate({
        "event_id": event_id, "occurred_at": now, "producer": producer, "trace_id": trace_id,
        "subject_id": flag.target_id, "subject_kind": flag.kind, "action": flag.action,
        "reason": flag.reason, "evidence": flag.evidence_json,
    })
