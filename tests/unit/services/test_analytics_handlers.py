"""Analytics' handlers and policy flusher, broker-free: the service wired by its own ``main.wire`` on
the in-memory bus, unit of work and repository. Engagement in, posteriors, flags and policy out; bad
figures dead-lettered naming the field; the policy as the planner applies it; the report's JSON.

Unless a test says otherwise a reading has 100 views, so a post weighs the default
``analytics_post_weight`` of 20 trials: a reward r adds 20 r to alpha and 20 (1 - r) to beta."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.message import Event
from reelfab.bus.unit_of_work import InMemoryUnitOfWork
from reelfab.contracts.arms import BadArm
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import PolicyUpdated, SubjectFlagged
from reelfab.contracts.topics import ENGAGEMENT_OBSERVED, JOB_FAILED, PUBLISH_COMPLETED, SUBJECT_FLAGGED
from reelfab.errors import PermanentError
from reelfab.service import ServiceContext, build_context
from reelfab_analytics import cli, handlers
from reelfab_analytics import main as analytics_main
from reelfab_analytics.bootstrap import Analytics
from reelfab_analytics.flusher import PolicyFlusher, flusher_of
from reelfab_analytics.posteriors import ArmStats
from reelfab_analytics.posts import PostReused
from reelfab_analytics.repository import InMemoryRepository
from tests.conftest import make_settings, unique

from .samples import event

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW = T0 + timedelta(days=1)  # the service's clock here: readings at T0 (+ hours) are in its past
ARM = "ada~t1~m1~bold"


@dataclass
class World:
    ctx: ServiceContext
    analytics: Analytics
    repo: InMemoryRepository
    uow: InMemoryUnitOfWork
    flusher: PolicyFlusher

    async def handle(self, ev: Event[Any]) -> None:
        await handlers.handlers(self.analytics)[ev.topic](ev)

    def flags(self) -> list[SubjectFlagged]:
        return [v for v in self.uow.on(SUBJECT_FLAGGED) if isinstance(v, SubjectFlagged)]

    def arm(self, space: str, arm_id: str) -> ArmStats:
        return self.repo.arms.get((space, arm_id), ArmStats())

    def seen(self, space: str, arm_id: str) -> tuple[int, float, float]:
        """(posts, trials, their mean rate) behind the arm."""
        s = self.arm(space, arm_id)
        trials = s.successes + s.failures
        return s.pulls, round(trials, 9), round(s.successes / trials, 9) if trials else 0.0


def world_of(**settings: Any) -> World:
    s = make_settings(**settings)
    spec = analytics_main.SPEC
    ctx = build_context(spec, s, InMemoryBus(s, spec.name, default_codec()), None, analytics_main.wire)
    analytics = ctx.extras["analytics"]
    assert isinstance(analytics, Analytics) and isinstance(analytics.repo, InMemoryRepository)
    assert isinstance(ctx.uow, InMemoryUnitOfWork)
    analytics.clock = lambda: NOW
    return World(ctx, analytics, analytics.repo, ctx.uow, flusher_of(ctx.extras))


@pytest.fixture
def world() -> World:
    return world_of()


def published(post: str, *, arm_id: str | None = ARM, subject: str = "ada", template: str | None = "t1",
              job: str | None = None, consent_version: int = 1) -> Event[Any]:
    return event(PUBLISH_COMPLETED, job_id=job or unique("job"), post_id=post, subject_id=subject,
                 template_id=template, arm_id=arm_id, platform="tiktok", published_at=T0,
                 consent_version=consent_version)


def observed(post: str, *, at: datetime = T0, views: int = 100, likes: int = 10, comments: int = 0,
             shares: int = 0, **overrides: Any) -> Event[Any]:
    values = dict(post_id=post, observed_at=at, views=views, likes=likes, comments=comments, shares=shares,
                  platform="tiktok", job_id=None, subject_id=None, template_id=None, arm_id=None,
                  avg_watch_time_s=None, completion_rate=None)
    values.update(overrides)
    return event(ENGAGEMENT_OBSERVED, **values)


def failed(job: str, subject: str | None, *, at: datetime, reason: str = "spam_risk") -> Event[Any]:
    return event(JOB_FAILED, job_id=job, subject_id=subject, reason_code=reason, occurred_at=at, stage="publisher")


def test_wire_subscribes_one_handler_per_consumed_topic_and_starts_the_flusher_with_the_service() -> None:
    w = world_of()
    assert sorted(s.topic.name for s in w.ctx.bus.subscriptions) == sorted(analytics_main.SPEC.consumes)
    assert set(handlers.HANDLED) == set(analytics_main.SPEC.consumes)
    assert w.ctx.on_start == [w.flusher.start] and w.ctx.on_stop == [w.flusher.stop]
    assert w.analytics.post_weight == 20.0 and w.analytics.uow is w.ctx.uow


# ------------------------------------------------------------------------------ posteriors


async def test_a_reading_of_a_published_post_updates_every_arm_of_its_combination(world: World) -> None:
    await world.handle(published("p1"))
    await world.handle(observed("p1", likes=20))  # reward 0.2, 20 trials: 4 successes, 16 failures
    for space, arm in [("subject", "ada"), ("template", "t1"), ("music", "m1"), ("style", "bold"),
                       ("subject_template", "ada~t1")]:
        stats = world.arm(space, arm)
        assert stats.pulls == 1, space
        assert [stats.successes, stats.failures] == pytest.approx([4.0, 16.0]), space


async def test_a_newer_reading_replaces_the_post_s_contribution_and_pulls_count_posts(world: World) -> None:
    await world.handle(published("p1"))
    await world.handle(observed("p1", at=T0, likes=20))
    await world.handle(observed("p1", at=T0 + timedelta(hours=1), likes=50))  # engagement grew: 0.5 replaces 0.2
    assert world.seen("subject", "ada") == (1, 20.0, 0.5)
    await world.handle(published("p2"))
    await world.handle(observed("p2", likes=10))
    assert world.seen("subject", "ada") == (2, 40.0, 0.3)  # (0.5 + 0.1) / 2: nothing of 0.2 left
    assert len(world.repo.observations) == 3  # every reading kept


async def test_a_post_s_weight_grows_with_its_views_up_to_the_post_weight(world: World) -> None:
    await world.handle(published("p1"))
    await world.handle(observed("p1", at=T0, views=4, likes=1))  # 4 views: 4 trials, not 20
    assert world.seen("subject", "ada") == (1, 4.0, 0.25)
    await world.handle(observed("p1", at=T0 + timedelta(hours=1), views=400, likes=100))
    assert world.seen("subject", "ada") == (1, 20.0, 0.25)


async def test_a_newer_reading_without_a_reward_takes_nothing_away() -> None:
    w = world_of(analytics_reward="completion")
    await w.handle(published("p1"))
    await w.handle(observed("p1", at=T0, completion_rate=0.6))
    await w.handle(observed("p1", at=T0 + timedelta(hours=1), completion_rate=None))  # the platform left it out
    assert w.seen("subject", "ada") == (1, 20.0, 0.6)
    await w.handle(observed("p1", at=T0 + timedelta(minutes=30), completion_rate=0.7))  # newer than the 0.6
    assert w.seen("subject", "ada") == (1, 20.0, 0.7)


async def test_the_post_weight_setting_is_honoured() -> None:
    w = world_of(analytics_post_weight=5.0, analytics_policy_flush_s=60)
    await w.handle(published("p1"))
    await w.handle(observed("p1", likes=40))
    [subject] = [r for r in await w.flusher.flush() if r.arm_space == "subject"]
    [ada] = subject.arms
    assert [ada.alpha, ada.beta, ada.pulls] == pytest.approx([1 + 5 * 0.4, 1 + 5 * 0.6, 1])


async def test_a_late_older_reading_is_kept_but_changes_nothing(world: World) -> None:
    await world.handle(published("p1"))
    await world.handle(observed("p1", at=T0 + timedelta(hours=2), likes=40))
    await world.handle(observed("p1", at=T0 + timedelta(hours=1), likes=90))  # older, arriving late
    assert world.seen("template", "t1") == (1, 20.0, 0.4)
    assert len(world.repo.observations) == 2


async def test_a_redelivered_event_changes_nothing(world: World) -> None:
    pub, obs = published("p1"), observed("p1", likes=30)
    for ev in (pub, obs, pub, obs, obs):
        await world.handle(ev)
    assert world.seen("subject", "ada") == (1, 20.0, 0.3)
    assert len(world.repo.observations) == 1
    assert world.uow.done == {pub.event_id: "publish.completed", obs.event_id: "engagement.observed"}


async def test_a_reading_before_its_publication_is_kept_and_attributed_when_it_comes(world: World) -> None:
    await world.handle(observed("p1", likes=25))
    assert world.repo.arms == {}  # nothing to attribute it to yet
    assert await world.repo.counts() == (1, 1)
    await world.handle(published("p1"))
    assert world.seen("subject", "ada") == (1, 20.0, 0.25)
    assert await world.repo.counts() == (1, 0)


async def test_a_reading_naming_its_arm_counts_at_once_and_the_publication_decides(world: World) -> None:
    await world.handle(observed("p1", likes=25, arm_id="bo~t2~-~calm", job_id="j1"))
    assert world.arm("subject", "bo").pulls == 1 and world.arm("music", "-").pulls == 1
    await world.handle(published("p1", job="j1"))  # the publisher says ada~t1~m1~bold: re-attributed
    assert world.seen("subject", "bo") == (0, 0.0, 0.0) and world.seen("subject", "ada") == (1, 20.0, 0.25)


async def test_a_post_without_an_arm_id_updates_only_the_spaces_it_names(world: World) -> None:
    await world.handle(published("p1", arm_id=None, template=None))
    await world.handle(observed("p1", likes=10))
    assert {space for space, _ in world.repo.arms} == {"subject"}


async def test_the_reward_setting_is_honoured() -> None:
    w = world_of(analytics_reward="completion")
    await w.handle(published("p1"))
    await w.handle(observed("p1", likes=90, completion_rate=0.3))
    await w.handle(published("p2", subject="bo"))
    await w.handle(observed("p2", likes=90))  # no completion rate: no reward, not counted
    assert w.seen("subject", "ada") == (1, 20.0, 0.3)
    assert w.arm("subject", "bo") == ArmStats()


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("overrides", "field"), [
    ({"views": -5}, "views"),
    ({"likes": -1}, "likes"),
    ({"completion_rate": math.nan}, "completion_rate"),
    ({"completion_rate": 1.5}, "completion_rate"),
    ({"avg_watch_time_s": math.inf}, "avg_watch_time_s"),
    ({"shares": 10**13}, "shares"),
    ({"views": 10, "likes": 500}, "likes"),  # fifty likes per view
    ({"arm_id": "no-tildes"}, "arm_id"),
])
async def test_an_impossible_reading_raises_a_permanent_error_naming_the_field(
        world: World, overrides: dict[str, Any], field: str) -> None:
    ev = observed("p1", **overrides)
    with pytest.raises(PermanentError, match=field):
        await world.handle(ev)
    assert world.repo.observations == [] and world.uow.done == {}  # nothing written, nothing marked


@pytest.mark.parametrize("field", ["likes", "comments", "shares"])
async def test_interactions_far_above_the_views_are_refused_naming_the_counter(field: str) -> None:
    """500 likes on 100 views would count as a perfect post (the reward clips at 1): refused. A few
    more than the views (counting lag) still count."""
    w = world_of()  # the default: at most one of each per view (plus slack)
    assert w.analytics.max_per_view == 1.0
    await w.handle(published("p1"))
    quiet = {"likes": 0, "comments": 0, "shares": 0}
    with pytest.raises(PermanentError, match=rf"{field} is 500 with 100 views, more than 1 per view"):
        await w.handle(observed("p1", **{**quiet, field: 500}))
    assert w.repo.observations == [] and w.repo.arms == {}
    await w.handle(observed("p1", **{**quiet, field: 104}))  # 4 more than the views: counting lag, allowed
    assert w.seen("subject", "ada") == (1, 20.0, 1.0)


async def test_a_reading_observed_in_the_future_is_refused_naming_observed_at(world: World) -> None:
    await world.handle(published("p1"))
    with pytest.raises(PermanentError, match=r"engagement of post p1: observed_at is 2031-01-03T03:04:05\+00:00, "
                                             r"365.0 days ahead of this service's clock"):
        await world.handle(observed("p1", at=NOW + timedelta(days=365), likes=90))
    assert world.repo.observations == [] and world.uow.done == {next(iter(world.uow.done)): "publish.completed"}
    await world.handle(observed("p1", at=NOW + timedelta(minutes=4), likes=30))  # clock skew: fine
    await world.handle(observed("p1", at=NOW - timedelta(hours=1), likes=10))  # older than that one: stale
    assert world.seen("subject", "ada") == (1, 20.0, 0.3)


@pytest.mark.parametrize("version", [-7, 0])
async def test_a_publication_under_an_impossible_consent_version_is_refused(world: World, version: int) -> None:
    with pytest.raises(PermanentError, match=rf"consent_version is {version}; consent versions start at 1"):
        await world.handle(published("p1", consent_version=version))
    assert world.repo.posts == {} and world.uow.done == {}


async def test_a_post_id_published_by_another_job_is_refused_and_keeps_its_credit(world: World) -> None:
    first, again = published("p1", job="j1"), published("p1", job="j1")  # the same job twice (two event ids)
    await world.handle(first)
    await world.handle(observed("p1", likes=40))
    await world.handle(again)  # idempotent: nothing moves
    assert world.seen("subject", "ada") == (1, 20.0, 0.4) and again.event_id in world.uow.done
    other = published("p1", job="j2", subject="bo", template="t2", arm_id="bo~t2~-~calm")
    with pytest.raises(PostReused, match="post_id p1 is already published by job j1; job j2 cannot publish it"):
        await world.handle(other)
    assert world.seen("subject", "ada") == (1, 20.0, 0.4) and world.arm("subject", "bo") == ArmStats()
    assert world.seen("template", "t1") == (1, 20.0, 0.4) and world.arm("template", "t2") == ArmStats()
    assert world.repo.posts["p1"].lineage is not None and world.repo.posts["p1"].lineage.job_id == "j1"
    assert other.event_id not in world.uow.done
    await world.handle(observed("p1", at=T0 + timedelta(hours=1), likes=60))  # still j1's post
    assert world.seen("subject", "ada") == (1, 20.0, 0.6) and world.arm("subject", "bo") == ArmStats()


async def test_on_the_bus_a_reused_post_id_is_dead_lettered_naming_the_post_and_both_jobs(world: World) -> None:
    bus = world.ctx.bus
    assert isinstance(bus, InMemoryBus)
    async with bus:
        await bus.publish(PUBLISH_COMPLETED, published("p1", job="j1").record)
        await bus.publish(PUBLISH_COMPLETED, published("p1", job="j1").record)
        await bus.wait_idle(5)  # keyed by job: j2's would not wait for j1's otherwise
        await bus.publish(PUBLISH_COMPLETED, published("p1", job="j2", arm_id="bo~t2~-~calm", subject="bo").record)
        await bus.wait_idle(5)
    dead = [dict(m.headers) for p in bus.log.log_for(PUBLISH_COMPLETED + ".dlq") for m in p]
    [headers] = dead
    message = (headers["reelfab.error.message"] or b"").decode()
    assert "post_id p1" in message and "job j1" in message and "job j2" in message
    assert (headers["reelfab.error.class"] or b"").endswith(b".PostReused")
    assert world.repo.posts["p1"].lineage is not None and world.repo.posts["p1"].lineage.job_id == "j1"


async def test_a_publication_with_a_malformed_arm_id_is_dead_lettered_naming_it(world: World) -> None:
    with pytest.raises(BadArm, match="arm_id 'arm-7'"):
        await world.handle(published("p1", arm_id="arm-7"))
    assert world.repo.posts == {}


async def test_the_analytics_max_count_setting_bounds_counters() -> None:
    w = world_of(analytics_max_count=1000)
    with pytest.raises(PermanentError, match="views is 1001, above analytics_max_count 1000"):
        await w.handle(observed("p1", views=1001))


async def test_on_the_bus_bad_figures_are_dead_lettered_with_the_field_and_good_ones_counted(world: World) -> None:
    bus = world.ctx.bus
    assert isinstance(bus, InMemoryBus)
    good, negative, nan, absurd = (observed("p1", likes=20), observed("p2", views=-3), observed("p3", completion_rate=math.nan),
                                   observed("p4", views=2, shares=1000))
    async with bus:
        await bus.publish(PUBLISH_COMPLETED, published("p1").record)
        for ev in (good, negative, nan, absurd):
            await bus.publish(ENGAGEMENT_OBSERVED, ev.record)
        await bus.wait_idle(5)
    dead = {m.key: dict(m.headers) for p in bus.log.log_for(ENGAGEMENT_OBSERVED + ".dlq") for m in p}
    assert set(dead) == {b"p2", b"p3", b"p4"}
    reasons = {k.decode(): (h["reelfab.error.message"] or b"").decode() for k, h in dead.items() if k}
    assert "views is -3" in reasons["p2"]
    assert "completion_rate is nan" in reasons["p3"]
    assert "shares is 1000 with 2 views" in reasons["p4"]
    assert all((h["reelfab.error.class"] or b"").endswith(b".BadEngagement") for h in dead.values())
    assert world.seen("subject", "ada") == (1, 20.0, 0.2)  # the good one counted, nothing of the bad
    assert {o.post_id for o in world.repo.observations} == {"p1"}


# ------------------------------------------------------------------------------ strikes


async def test_strikes_within_the_window_disable_the_subject_once() -> None:
    w = world_of(analytics_strike_limit=3, analytics_strike_window_s=3600)
    for minutes in (0, 20, 40, 50):
        await w.handle(failed(unique("job"), "ada", at=T0 + timedelta(minutes=minutes)))
    [flag] = w.flags()  # at the third strike, not again at the fourth
    assert (flag.subject_id, flag.subject_kind, flag.action) == ("ada", "FACE", "DISABLED")
    evidence = json.loads(flag.evidence or "{}")
    assert len(evidence["strikes"]) == 3 and evidence["window_s"] == 3600
    [entry] = w.repo.audit_log
    assert (entry.actor, entry.rule, entry.action, entry.target_id) == ("analytics/strikes", "strikes", "DISABLED", "ada")


async def test_strikes_spread_over_a_longer_time_do_not_disable() -> None:
    w = world_of(analytics_strike_limit=3, analytics_strike_window_s=3600)
    for minutes in (0, 50, 100, 150, 200):
        await w.handle(failed(unique("job"), "ada", at=T0 + timedelta(minutes=minutes)))
    assert w.flags() == []


async def test_only_strike_reasons_count_and_a_redelivered_strike_counts_once() -> None:
    w = world_of(analytics_strike_limit=2, analytics_strike_reasons="spam_risk")
    strike = failed("j1", "ada", at=T0)
    await w.handle(strike)
    await w.handle(strike)
    await w.handle(failed("j2", "ada", at=T0, reason="spec_check_failed"))
    assert w.flags() == [] and len(w.repo.strikes) == 1


async def test_one_job_failing_three_times_is_one_strike_not_three() -> None:
    """Three job.failed for ONE job (distinct event ids, moderation_rejected) flag nothing; the
    strikes count distinct jobs, and the flag's evidence lists them."""
    w = world_of(analytics_strike_limit=3)
    await w.handle(published("p1", job="j1"))
    for minutes in (0, 5, 10):
        await w.handle(failed("j1", "ada", at=T0 + timedelta(minutes=minutes), reason="moderation_rejected"))
    assert w.flags() == [] and len(w.repo.strikes) == 6  # every failure kept (subject and template), one strike
    await w.handle(published("p2", job="j2"))
    await w.handle(failed("j2", "ada", at=T0 + timedelta(minutes=20), reason="moderation_rejected"))
    await w.handle(failed("j1", "ada", at=T0 + timedelta(minutes=30), reason="spam_risk"))  # j1 yet again
    assert w.flags() == []  # two distinct jobs
    await w.handle(published("p3", job="j3"))
    await w.handle(failed("j3", "ada", at=T0 + timedelta(minutes=40), reason="moderation_rejected"))
    flags = {f.subject_kind: f for f in w.flags()}
    assert set(flags) == {"FACE", "TEMPLATE"}
    for flag in flags.values():
        evidence = json.loads(flag.evidence or "{}")
        assert evidence["jobs"] == ["j1", "j2", "j3"] and [s["failures"] for s in evidence["strikes"]] == [4, 1, 1]
        assert "on 3 distinct jobs" in flag.reason


async def test_a_strike_reaches_the_template_of_a_known_job_and_the_subject_of_its_lineage() -> None:
    w = world_of(analytics_strike_limit=1)
    await w.handle(published("p1", job="j1"))
    await w.handle(failed("j1", None, at=T0))  # the failure names no subject: the post's lineage does
    assert sorted((f.subject_kind, f.subject_id) for f in w.flags()) == [("FACE", "ada"), ("TEMPLATE", "t1")]


async def test_a_disabled_subject_is_published_disabled() -> None:
    w = world_of(analytics_strike_limit=1)
    await w.handle(published("p1", job="j1", subject="bo", arm_id="bo~t1~m1~bold"))
    await w.handle(observed("p1"))
    await w.flusher.flush()
    await w.handle(failed(unique("job"), "ada", at=T0))  # ada has no posts yet: listed, disabled
    records = {r.arm_space: r for r in await w.flusher.flush()}
    assert set(records) == {"subject", "subject_template"}
    subject = {a.arm_id: a for a in records["subject"].arms}
    assert subject["ada"].disabled and subject["ada"].pulls == 0 and not subject["bo"].disabled


# ------------------------------------------------------------------------------ elimination


async def test_a_weak_template_becomes_an_elimination_candidate_once_and_is_not_disabled() -> None:
    w = world_of(analytics_elimination_mean=0.1, analytics_elimination_min_posts=5)
    for i in range(8):
        await w.handle(published(f"p{i}"))
        await w.handle(observed(f"p{i}", likes=2))  # 0.02 per post
    [flag] = w.flags()  # at the fifth post (mean (1 + 2) / (2 + 100) < 0.1), not again
    assert (flag.subject_id, flag.subject_kind, flag.action) == ("t1", "TEMPLATE", "ELIMINATION_CANDIDATE")
    evidence = json.loads(flag.evidence or "{}")
    assert evidence["posts"] == 5 and evidence["mean"] == pytest.approx(3 / 102)
    [entry] = w.repo.audit_log
    assert (entry.rule, entry.action, entry.target_id) == ("elimination", "ELIMINATION_CANDIDATE", "t1")
    records = {r.arm_space: r for r in await w.flusher.flush()}
    assert not any(a.disabled for a in records["template"].arms)  # reported, not disabled
    assert ("TEMPLATE", "t1") not in {(k, t) for (k, t), a in w.repo.flags.items() if a == "DISABLED"}


async def test_a_template_under_the_threshold_with_too_few_posts_is_no_candidate() -> None:
    w = world_of(analytics_elimination_mean=0.1, analytics_elimination_min_posts=5)
    for i in range(4):
        await w.handle(published(f"p{i}"))
        await w.handle(observed(f"p{i}", likes=0))
    assert w.flags() == [] and w.repo.audit_log == []


# ------------------------------------------------------------------------------ policy


async def test_the_flusher_publishes_only_changed_spaces_with_increasing_versions(world: World) -> None:
    assert await world.flusher.flush() == []
    await world.handle(published("p1"))
    await world.handle(observed("p1", likes=20))
    first = {r.arm_space: r for r in await world.flusher.flush()}
    assert set(first) == {"subject", "template", "music", "style", "subject_template"}
    assert all(r.policy_version == 1 for r in first.values())
    [ada] = first["subject"].arms
    assert (ada.arm_id, ada.pulls) == ("ada", 1)
    assert [ada.alpha, ada.beta] == pytest.approx([1 + 20 * 0.2, 1 + 20 * 0.8])
    assert ada.mean == pytest.approx(5.0 / 22.0) and not ada.disabled
    assert await world.flusher.flush() == []  # nothing changed since

    await world.handle(published("p2", arm_id=None, subject="bo", template=None))  # the subject space only
    await world.handle(observed("p2", likes=50))
    [second] = await world.flusher.flush()
    assert (second.arm_space, second.policy_version) == ("subject", 2)
    assert [(a.arm_id, a.pulls) for a in second.arms] == [("ada", 1), ("bo", 1)]  # the whole space
    on_bus = [m for part in world.ctx.bus.log.log_for("reelfab.policy.updated.v1") for m in part]  # type: ignore[attr-defined]
    assert len(on_bus) == 6


async def test_the_flusher_runs_in_the_background_and_flushes_on_stop() -> None:
    w = world_of(analytics_policy_flush_s=0.01)
    await w.flusher.start()
    await w.handle(published("p1"))
    await w.handle(observed("p1"))
    await w.flusher.stop()
    messages = [m for part in w.ctx.bus.log.log_for("reelfab.policy.updated.v1") for m in part]  # type: ignore[attr-defined]
    assert len(messages) == 5
    assert w.repo.changed == set()


async def test_a_space_too_large_for_one_message_is_published_without_its_least_seen_arms() -> None:
    w = world_of(max_message_bytes=3000, analytics_strike_limit=1)
    for i in range(120):
        await w.handle(published(f"p{i}", subject=f"subject-{i:03d}", arm_id=f"subject-{i:03d}~t1~m1~bold"))
        await w.handle(observed(f"p{i}", likes=10))
    for i in range(3):  # three more posts of subject-007: the best-known arm
        await w.handle(published(f"q{i}", subject="subject-007", arm_id="subject-007~t1~m1~bold"))
        await w.handle(observed(f"q{i}", likes=10))
    await w.handle(failed(unique("job"), "zed", at=T0))  # disabled: listed whatever the size
    records = {r.arm_space: r for r in await w.flusher.flush()}
    subject = {a.arm_id: a for a in records["subject"].arms}
    assert 10 < len(subject) < 121
    assert subject["zed"].disabled and subject["subject-007"].pulls == 4
    assert len(records["template"].arms) == 1  # the small spaces whole
    on_bus = [m for part in w.ctx.bus.log.log_for("reelfab.policy.updated.v1") for m in part]  # type: ignore[attr-defined]
    assert len(on_bus) == 5 and all(len(m.value) <= 3000 for m in on_bus)


def test_the_policy_record_fits_its_schema() -> None:
    record = PolicyUpdated(event_id="e", occurred_at=T0, producer="analytics", arm_space="subject", policy_version=1,
                           computed_at=T0, arms=[])
    InMemoryBus(make_settings(), "analytics", default_codec()).encode("reelfab.policy.updated.v1", record)


# ------------------------------------------------------------------------------ the report


async def test_the_report_ranks_arms_by_posterior_mean_with_credible_intervals() -> None:
    w = world_of(analytics_strike_limit=1)
    for i, (subject, likes) in enumerate([("ada", 60), ("ada", 40), ("bo", 5), ("cy", 30)]):
        await w.handle(published(f"p{i}", subject=subject, arm_id=f"{subject}~t1~m1~bold"))
        await w.handle(observed(f"p{i}", likes=likes))
    await w.handle(failed(unique("job"), "bo", at=T0))
    data = cli.leaderboard(await w.repo.standings(), w.analytics.prior, space="subject", top=2)
    [space] = data["spaces"]
    assert space["space"] == "subject" and space["arms_total"] == 3
    assert [a["arm_id"] for a in space["arms"]] == ["ada", "cy"]  # Beta(21, 21) before Beta(7, 15); bo cut by --top
    ada, cy = space["arms"]
    assert (ada["alpha"], ada["beta"], ada["pulls"]) == (pytest.approx(21.0), pytest.approx(21.0), 2)
    assert ada["mean"] == pytest.approx(0.5) and cy["mean"] == pytest.approx(7 / 22)
    for arm in (ada, cy):
        assert 0.0 < arm["ci95_low"] < arm["mean"] < arm["ci95_high"] < 1.0
    assert ada["ci95_high"] - ada["ci95_low"] < cy["ci95_high"] - cy["ci95_low"]  # more posts, narrower
    assert data["posts"] == {"tracked": 4, "unattributed": 0}
    everything = cli.leaderboard(await w.repo.standings(), w.analytics.prior, top=10)
    bo = next(a for s in everything["spaces"] if s["space"] == "subject" for a in s["arms"] if a["arm_id"] == "bo")
    assert bo["disabled"] and bo["flag"] == "DISABLED"
    json.dumps(everything)  # machine-readable as it stands
    with pytest.raises(Exception, match="unknown arm space 'colour'"):
        cli.leaderboard(await w.repo.standings(), w.analytics.prior, space="colour")


async def test_the_report_command_prints_the_leaderboard_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    w = world_of()
    for i, (subject, likes) in enumerate([("ada", 50), ("bo", 10), ("bo", 20)]):
        await w.handle(published(f"p{i}", subject=subject, template=f"t{i}", arm_id=f"{subject}~t{i}~-~bold"))
        await w.handle(observed(f"p{i}", likes=likes))
    await w.flusher.flush()
    standings = await w.repo.standings()

    def run_on_memory(schema: str, work: Any) -> Any:  # the command's database session, in memory
        assert schema == "analytics"

        async def go() -> Any:
            return await work(w.repo)

        return asyncio.run(go())

    monkeypatch.setattr(cli, "_run", run_on_memory)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli.app, ["report", "--json", "--space", "subject", "--top", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"prior", "posts", "spaces"}
    assert data["prior"] == {"alpha": 1.0, "beta": 1.0} and data["posts"] == {"tracked": 3, "unattributed": 0}
    [space] = data["spaces"]
    assert (space["space"], space["policy_version"], space["arms_total"]) == ("subject", 1, 2)
    assert [a["arm_id"] for a in space["arms"]] == ["ada", "bo"]
    ada = space["arms"][0]
    assert set(ada) == {"rank", "arm_id", "mean", "ci95_low", "ci95_high", "alpha", "beta", "pulls", "disabled", "flag"}
    assert (ada["rank"], ada["pulls"], ada["disabled"], ada["flag"]) == (1, 1, False, None)
    assert (ada["alpha"], ada["beta"]) == (pytest.approx(11.0), pytest.approx(11.0))
    # scipy.stats.beta.ppf([0.025, 0.975], 11, 11)
    assert ada["ci95_low"] == pytest.approx(0.29780684, abs=1e-7) and ada["ci95_high"] == pytest.approx(0.70219316, abs=1e-7)

    every = json.loads((await asyncio.to_thread(runner.invoke, cli.app, ["report", "--json"])).output)
    assert [s["space"] for s in every["spaces"]] == list(standings.spaces)  # every arm space, in order
    table = await asyncio.to_thread(runner.invoke, cli.app, ["report", "--top", "1"])
    assert table.exit_code == 0 and "ada" in table.output and "bo" not in table.output.split("subject (")[1][:400]
    wrong = await asyncio.to_thread(runner.invoke, cli.app, ["report", "--space", "colour"])
    assert wrong.exit_code != 0 and "unknown arm space 'colour'" in wrong.output


# ------------------------------------------------------------------------------ the planner's side


async def test_the_policy_published_is_what_the_planner_applies() -> None:
    from reelfab_planner.policy import Policy

    w = world_of(analytics_strike_limit=1)
    await w.handle(published("p1", subject="ada", arm_id="ada~t1~m1~bold"))
    await w.handle(observed("p1", likes=60))
    await w.handle(published("p2", subject="bo", arm_id="bo~t1~-~bold"))
    await w.handle(observed("p2", likes=5))
    await w.handle(failed(unique("job"), "cy", at=T0))  # cy disabled before any post of hers
    policy = Policy()
    for record in await w.flusher.flush():  # as the planner's on_policy hands them over
        update = policy.apply(record.arm_space, record.policy_version, [a.to_avro() for a in record.arms], None)
        assert update.applied and update.unknown == 0, update
    assert set(policy.versions) == {"subject", "template", "music", "style", "subject_template"}
    ada, bo, cy = (policy.arm("subject", s) for s in ("ada", "bo", "cy"))
    assert [ada.alpha, ada.beta, ada.pulls] == pytest.approx([13.0, 9.0, 1])
    assert ada.mean > bo.mean and cy.disabled and not ada.disabled
    assert policy.arm("subject_template", "ada~t1").pulls == 1 and policy.arm("music", "-").pulls == 1
    draws = policy.sample("subject", ["ada", "bo", "cy"], np.random.default_rng(7))
    assert np.isneginf(draws[2]) and np.isfinite(draws[:2]).all()  # a disabled subject is never chosen


async def test_a_burst_of_readings_is_one_policy_record_per_space_per_batch(world: World) -> None:
    for i in range(30):
        await world.handle(published(f"p{i}", subject=f"s{i % 3}", arm_id=f"s{i % 3}~t1~m1~bold"))
        for hour in range(3):
            await world.handle(observed(f"p{i}", at=T0 + timedelta(hours=hour), likes=10 + hour))
    records = await world.flusher.flush()
    assert sorted(r.arm_space for r in records) == sorted(["subject", "template", "music", "style", "subject_template"])
    subject = next(r for r in records if r.arm_space == "subject")
    assert [(a.arm_id, a.pulls) for a in subject.arms] == [("s0", 10), ("s1", 10), ("s2", 10)]
    assert all(a.alpha == pytest.approx(1 + 10 * 20 * 0.12) for a in subject.arms)  # newest readings only


async def test_a_published_policy_sets_the_leaderboard_gauges(world: World) -> None:
    from prometheus_client import REGISTRY

    await world.handle(published("p1"))
    await world.handle(observed("p1", likes=20))
    records = await world.flusher.flush()
    subject = next(r for r in records if r.arm_space == "subject")
    [ada] = [a for a in subject.arms if a.arm_id == "ada"]
    labels = {"space": "subject", "arm": "ada"}
    assert REGISTRY.get_sample_value("reelfab_analytics_arm_posterior_mean", labels) == pytest.approx(ada.mean)
    assert REGISTRY.get_sample_value("reelfab_analytics_arm_posts", labels) == 1.0


def test_the_leaderboard_keeps_the_top_live_arms_of_each_space() -> None:
    from types import SimpleNamespace

    from reelfab_analytics.metrics import Leaderboard

    board = Leaderboard(top=2)
    arms = [SimpleNamespace(arm_id=a, mean=m, pulls=p, disabled=d)
            for a, m, p, d in [("a", 0.1, 3, False), ("b", 0.9, 1, True), ("c", 0.5, 2, False), ("d", 0.7, 1, False)]]
    board.update("subject", arms)
    [mean, _posts] = list(board.collect())
    assert [(s.labels["arm"], s.value) for s in mean.samples] == [("d", 0.7), ("c", 0.5)]  # b is disabled
