"""Analytics' pure decisions, without bus or database: the reward, the checks of a reading, Beta
posteriors with the post weight and their exact quantiles, a post's contribution being replaced, the
strike window and the elimination rule."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from reelfab.contracts.arms import BadArm
from reelfab.errors import PermanentError
from reelfab_analytics.posteriors import (
    ArmDelta,
    ArmStats,
    Contribution,
    Posterior,
    Prior,
    beta_cdf,
    beta_quantile,
    contribution_deltas,
    post_trials,
)
from reelfab_analytics.posts import (
    ENGAGEMENT,
    PUBLISH,
    BadPublication,
    Lineage,
    Post,
    PostReused,
    check_publication,
)
from reelfab_analytics.reward import (
    BadEngagement,
    RewardMode,
    allowed_interactions,
    check_observed_at,
    check_reading,
    reward_of,
)
from reelfab_analytics.rules import (
    CLEARED,
    DISABLED,
    ELIMINATION_CANDIDATE,
    FACE,
    TEMPLATE_KIND,
    EliminationRule,
    Strike,
    StrikeRule,
    first_per_job,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def reading(**overrides: Any) -> Any:
    values: dict[str, Any] = dict(post_id="post-1", views=100, likes=5, comments=2, shares=3, avg_watch_time_s=7.5,
                                  completion_rate=None)
    values.update(overrides)
    return SimpleNamespace(**values)


# ------------------------------------------------------------------------------ reward


def test_auto_reward_is_the_completion_rate_where_reported_else_interactions_per_view() -> None:
    assert reward_of(reading(completion_rate=0.42), RewardMode.AUTO) == 0.42
    assert reward_of(reading(), RewardMode.AUTO) == pytest.approx(0.10)  # (5 + 2 + 3) / 100


def test_forced_reward_modes() -> None:
    assert reward_of(reading(completion_rate=0.42), RewardMode.INTERACTIONS) == pytest.approx(0.10)
    assert reward_of(reading(completion_rate=0.42), RewardMode.COMPLETION) == 0.42
    assert reward_of(reading(), RewardMode.COMPLETION) is None  # no completion rate: no reward at all


def test_a_reading_without_views_carries_no_reward_and_interactions_above_views_clip_to_one() -> None:
    assert reward_of(reading(views=0, likes=0, comments=0, shares=0), RewardMode.AUTO) is None
    assert reward_of(reading(views=0, likes=2, completion_rate=0.5), RewardMode.AUTO) is None  # nothing seen
    assert reward_of(reading(views=0, completion_rate=0.5), RewardMode.COMPLETION) is None
    assert reward_of(reading(views=10, likes=9, comments=3, shares=4), RewardMode.AUTO) == 1.0  # allowed, clipped
    check_reading(reading(views=10, likes=9, comments=3, shares=4), 10**12)  # not refused
    check_reading(reading(views=0, likes=10, comments=0, shares=0), 10**12)  # likes before views are counted


def test_the_reward_mode_setting_is_checked() -> None:
    assert RewardMode.parse(" Completion ") is RewardMode.COMPLETION
    with pytest.raises(ValueError, match="analytics_reward 'likes'"):
        RewardMode.parse("likes")


@pytest.mark.parametrize(("overrides", "field"), [
    ({"views": -1}, "views"),
    ({"likes": -3}, "likes"),
    ({"comments": -1}, "comments"),
    ({"shares": -1}, "shares"),
    ({"views": 10**13}, "views"),
    ({"shares": 10**12 + 1}, "shares"),
    ({"views": 100, "likes": 1011}, "likes"),  # ten likes per view: absurd
    ({"views": 100, "likes": 500}, "likes"),  # five per view: absurd too (at most 100 × 1.05 + 10)
    ({"views": 0, "comments": 11}, "comments"),
    ({"views": 5, "shares": 16}, "shares"),
    ({"completion_rate": math.nan}, "completion_rate"),
    ({"completion_rate": math.inf}, "completion_rate"),
    ({"completion_rate": 1.2}, "completion_rate"),
    ({"completion_rate": -0.1}, "completion_rate"),
    ({"avg_watch_time_s": math.nan}, "avg_watch_time_s"),
    ({"avg_watch_time_s": -math.inf}, "avg_watch_time_s"),
    ({"avg_watch_time_s": -2.0}, "avg_watch_time_s"),
])
def test_impossible_readings_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEngagement, match=rf"post-1: {field} is ") as raised:
        check_reading(reading(**overrides), 10**12)
    assert isinstance(raised.value, PermanentError)


# ------------------------------------------------------------------------------ posteriors


def test_the_absurd_per_view_bound_is_a_parameter() -> None:
    check_reading(reading(views=100, likes=1000), 10**12, max_per_view=10)
    with pytest.raises(BadEngagement, match=r"likes is 300 with 100 views, more than 2 per view allows \(at most 220"):
        check_reading(reading(views=100, likes=300), 10**12, max_per_view=2)


@pytest.mark.parametrize("field", ["likes", "comments", "shares"])
def test_by_default_an_interaction_counter_is_at_most_the_views_plus_a_counting_lag_slack(field: str) -> None:
    """500 likes on 100 views is no audience (the reward would clip it to a perfect 1.0): refused,
    naming the counter. Up to views × 1.05 + 10 is counting lag, allowed."""
    quiet = {"likes": 0, "comments": 0, "shares": 0}
    with pytest.raises(BadEngagement, match=rf"post-1: {field} is 500 with 100 views, more than 1 per view"):
        check_reading(reading(**{**quiet, "views": 100, field: 500}), 10**12)
    check_reading(reading(**{**quiet, "views": 100, field: 115}), 10**12)  # 100 × 1.05 + 10
    with pytest.raises(BadEngagement, match=rf"{field} is 116 with 100 views"):
        check_reading(reading(**{**quiet, "views": 100, field: 116}), 10**12)
    check_reading(reading(**{**quiet, "views": 100_000, field: 104_000}), 10**12)  # lag grows with the views
    with pytest.raises(BadEngagement, match=rf"{field} is 106000 with 100000 views"):
        check_reading(reading(**{**quiet, "views": 100_000, field: 106_000}), 10**12)
    assert allowed_interactions(0) == 10 and allowed_interactions(100) == pytest.approx(115)


def test_a_reading_from_the_future_is_refused_beyond_the_clock_skew() -> None:
    now = T0
    check_observed_at("post-1", now + timedelta(minutes=5), now)  # within the default 5 minutes of skew
    check_observed_at("post-1", now - timedelta(days=30), now)  # the past is fine
    with pytest.raises(BadEngagement, match=r"post post-1: observed_at is 2030-01-01T00:06:00\+00:00, 360 s ahead"):
        check_observed_at("post-1", now + timedelta(minutes=6), now)
    with pytest.raises(BadEngagement, match=r"observed_at .* 365.0 days ahead .* more than the 60 s"):
        check_observed_at("post-1", now + timedelta(days=365), now, timedelta(seconds=60))


def test_a_post_counts_as_post_weight_trials_capped_by_its_views() -> None:
    assert post_trials(20.0, 5000) == 20.0
    assert post_trials(20.0, 7) == 7.0  # seven views are not twenty trials' evidence
    assert post_trials(20.0, 0) == 0.0
    post = Contribution({"subject": "ada"}, reward=0.25, trials=20.0)
    assert (post.successes, post.failures) == (5.0, 15.0)  # alpha += w r, beta += w (1 - r)


def test_a_posterior_is_the_prior_plus_weighted_successes_and_failures() -> None:
    # two posts of weight 20 at rates 0.1 and 0.3: alpha = 1 + 2 + 6, beta = 1 + 18 + 14
    p = Posterior.of(Prior(1.0, 1.0), ArmStats(pulls=2, successes=8.0, failures=32.0))
    assert (p.alpha, p.beta, p.pulls) == (9.0, 33.0, 2)
    assert p.mean == pytest.approx(9 / 42)
    drifted = Posterior.of(Prior(2.0, 3.0), ArmStats(pulls=0, successes=-1e-12, failures=-3e-13))  # float drift
    assert (drifted.alpha, drifted.beta) == (2.0, 3.0)


@pytest.mark.parametrize(("a", "b", "low", "high"), [  # scipy.stats.beta.ppf(0.025 / 0.975, a, b)
    (3.5, 7.25, 0.09532693235059767, 0.6168492059286586),
    (12.3, 88.7, 0.06580590185657484, 0.19189590250899055),
    (1.4, 40.6, 0.0021254806059750092, 0.10412614706893798),
    (501.2, 1499.8, 0.2317342991808793, 0.2696876581611506),
])
def test_credible_intervals_are_exact_beta_quantiles(a: float, b: float, low: float, high: float) -> None:
    got_low, got_high = Posterior(a, b, 0).interval()
    assert got_low == pytest.approx(low, abs=1e-10) and got_high == pytest.approx(high, abs=1e-10)


def test_beta_quantiles_in_closed_form_cases() -> None:
    for p in (0.01, 0.025, 0.5, 0.975):
        assert beta_quantile(p, 1, 1) == pytest.approx(p, abs=1e-12)
        assert beta_quantile(p, 3, 1) == pytest.approx(p ** (1 / 3), abs=1e-12)
        assert beta_quantile(p, 1, 4) == pytest.approx(1 - (1 - p) ** (1 / 4), abs=1e-12)
    assert beta_cdf(0.3, 2, 5) == pytest.approx(0.579825, abs=1e-6)
    with pytest.raises(ValueError):
        beta_quantile(1.5, 1, 1)


def test_a_newer_reading_replaces_the_contribution_without_a_second_pull() -> None:
    arms = {"subject": "ada", "template": "t1"}
    first = contribution_deltas(None, Contribution(arms, 0.25, 20.0))
    assert first == [ArmDelta("subject", "ada", 1, 5.0, 15.0), ArmDelta("template", "t1", 1, 5.0, 15.0)]
    # engagement grew: the old 5/15 goes out, the new 15/5 comes in; still one post
    replaced = contribution_deltas(Contribution(arms, 0.25, 20.0), Contribution(arms, 0.75, 20.0))
    assert replaced == [ArmDelta("subject", "ada", 0, 10.0, -10.0), ArmDelta("template", "t1", 0, 10.0, -10.0)]
    grew = contribution_deltas(Contribution(arms, 0.5, 4.0), Contribution(arms, 0.5, 20.0))  # more views seen
    assert grew == [ArmDelta("subject", "ada", 0, 8.0, 8.0), ArmDelta("template", "t1", 0, 8.0, 8.0)]
    assert contribution_deltas(Contribution(arms, 0.5, 20.0), Contribution(arms, 0.5, 20.0)) == []
    moved = contribution_deltas(Contribution({"subject": "ada"}, 0.5, 20.0), Contribution({"subject": "bo"}, 0.5, 20.0))
    assert moved == [ArmDelta("subject", "ada", -1, -10.0, -10.0), ArmDelta("subject", "bo", 1, 10.0, 10.0)]
    assert contribution_deltas(Contribution(arms, 0.5, 20.0), None) == [
        ArmDelta("subject", "ada", -1, -10.0, -10.0), ArmDelta("template", "t1", -1, -10.0, -10.0)]


def test_replacing_readings_leaves_the_arm_as_if_only_the_newest_had_been_seen() -> None:
    arms = {"subject": "ada"}
    stats = ArmStats()
    previous = None
    for reward, trials in [(0.02, 3.0), (0.05, 12.0), (0.11, 20.0), (0.09, 20.0)]:  # a post's readings over a day
        now = Contribution(arms, reward, trials)
        for d in contribution_deltas(previous, now):
            stats = ArmStats(stats.pulls + d.pulls, stats.successes + d.successes, stats.failures + d.failures)
        previous = now
    once = Posterior.of(Prior(1, 1), ArmStats(1, 0.09 * 20, 0.91 * 20))
    got = Posterior.of(Prior(1, 1), stats)
    assert got.pulls == 1
    assert [got.alpha, got.beta] == pytest.approx([once.alpha, once.beta])


# ------------------------------------------------------------------------------ lineage and posts


def test_a_lineage_with_an_arm_id_names_every_space_and_one_without_only_what_it_names() -> None:
    full = Lineage.named(PUBLISH, job_id="j", subject_id="ada", template_id="t1", arm_id="ada~t1~m1~bold")
    assert full is not None and full.arms() == {
        "subject": "ada", "template": "t1", "music": "m1", "style": "bold", "subject_template": "ada~t1"}
    partial = Lineage.named(PUBLISH, job_id="j", subject_id="ada", template_id=None, arm_id=None)
    assert partial is not None and partial.arms() == {"subject": "ada"}
    both = Lineage.named(PUBLISH, job_id="j", subject_id="ada", template_id="t1", arm_id=None)
    assert both is not None and both.arms() == {"subject": "ada", "template": "t1", "subject_template": "ada~t1"}
    assert Lineage.named(ENGAGEMENT, job_id="j", subject_id=None, template_id=None, arm_id=None) is None
    with pytest.raises(BadArm, match="arm_id 'arm-7'"):
        Lineage.named(PUBLISH, job_id="j", subject_id="ada", template_id=None, arm_id="arm-7")
    odd = Lineage.named(PUBLISH, job_id="j", subject_id="bo", template_id="t1", arm_id="ada~t1~-~bold")
    assert odd is not None and odd.disagreement() == "subject_id 'bo' but arm_id says 'ada'"


def test_an_older_reading_never_overwrites_a_newer_one() -> None:
    post = Post("p").read(T0 + timedelta(hours=2), 0.5, 20.0, None, "tiktok")
    late = post.read(T0 + timedelta(hours=1), 0.9, 20.0, None, "tiktok")
    assert (late.observed_at, late.reward, late.trials) == (T0 + timedelta(hours=2), 0.5, 20.0)
    assert not post.is_newer(T0 + timedelta(hours=2))  # the same instant is not newer either


def test_a_post_belongs_to_one_job_and_another_job_claiming_it_is_refused() -> None:
    ada = Lineage.named(PUBLISH, job_id="j1", subject_id="ada", template_id="t1", arm_id="ada~t1~m1~bold")
    bo = Lineage.named(PUBLISH, job_id="j2", subject_id="bo", template_id="t2", arm_id="bo~t2~-~calm")
    assert ada is not None and bo is not None
    post = Post("p1").published(ada, "tiktok", T0)
    again = post.published(ada, "tiktok", T0 + timedelta(minutes=1))  # the same job again: fine
    assert again.lineage == ada
    with pytest.raises(PostReused, match=r"post_id p1 is already published by job j1; job j2 cannot") as raised:
        post.published(bo, "tiktok", T0)
    assert isinstance(raised.value, PermanentError)
    hinted = Post("p2").read(T0, 0.5, 20.0, replace(bo, source=ENGAGEMENT), "tiktok")  # a reading's lineage ...
    assert hinted.published(ada, "tiktok", T0).lineage == ada  # ... gives way to the publication


@pytest.mark.parametrize("version", [-7, 0])
def test_a_publication_under_a_consent_version_the_registry_never_issues_is_refused(version: int) -> None:
    with pytest.raises(BadPublication, match=rf"post p1 by job j1: consent_version is {version}; .* start at 1"):
        check_publication(job_id="j1", post_id="p1", consent_version=version)
    check_publication(job_id="j1", post_id="p1", consent_version=1)


# ------------------------------------------------------------------------------ strikes


def strikes(*hours: float, target: str = "ada") -> list[Strike]:
    return [Strike(f"ev-{i}", FACE, target, f"job-{i}", "spam_risk", T0 + timedelta(hours=h))
            for i, h in enumerate(hours)]


RULE = StrikeRule(frozenset({"spam_risk", "moderation_rejected"}), 3, timedelta(days=1))


def test_the_strike_rule_fires_at_the_limit_within_the_window() -> None:
    assert RULE.judge(FACE, "ada", strikes(0, 5), None) is None
    flag = RULE.judge(FACE, "ada", strikes(0, 5, 23), None)
    assert flag is not None and (flag.kind, flag.target_id, flag.action) == (FACE, "ada", DISABLED)
    assert len(flag.evidence["strikes"]) == 3 and flag.evidence["limit"] == 3
    assert "3 moderation strikes within 1 day (spam_risk)" in flag.reason
    hours = StrikeRule(RULE.reasons, 3, timedelta(hours=36)).judge(FACE, "ada", strikes(0, 5, 23), None)
    assert hours is not None and "within 1.5 days" in hours.reason


def test_the_strike_rule_does_not_fire_for_strikes_spread_over_a_longer_time() -> None:
    assert RULE.judge(FACE, "ada", strikes(0, 20, 40, 60), None) is None  # 4 strikes, never 3 in a day


def test_the_strike_rule_fires_once_only() -> None:
    assert RULE.judge(FACE, "ada", strikes(0, 1, 2, 3), DISABLED) is None


def test_a_late_strike_completes_the_window_it_belongs_to() -> None:
    flag = RULE.judge(FACE, "ada", strikes(30, 10, 20), None)  # arrived last, happened in the middle
    assert flag is not None


def test_a_job_failing_again_and_again_is_one_strike() -> None:
    """Three job.failed for ONE job (three event ids) are one strike, not three."""
    one_job = [Strike(f"ev-{i}", FACE, "ada", "job-1", "moderation_rejected", T0 + timedelta(minutes=i))
               for i in range(3)]
    assert RULE.judge(FACE, "ada", one_job, None) is None
    two_more = one_job + strikes(1, 2)  # job-0 and job-1 of strikes() : job-1 is the same job once more
    assert RULE.judge(FACE, "ada", two_more, None) is None  # two distinct jobs
    three = one_job + [Strike("ev-x", FACE, "ada", "job-2", "spam_risk", T0 + timedelta(hours=3)),
                       Strike("ev-y", FACE, "ada", "job-3", "spam_risk", T0 + timedelta(hours=4))]
    flag = RULE.judge(FACE, "ada", three, None)
    assert flag is not None and flag.reason.endswith("(moderation_rejected, spam_risk) on 3 distinct jobs")
    assert flag.evidence["jobs"] == ["job-1", "job-2", "job-3"]
    assert [(s["job_id"], s["event_id"], s["failures"]) for s in flag.evidence["strikes"]] == [
        ("job-1", "ev-0", 3), ("job-2", "ev-x", 1), ("job-3", "ev-y", 1)]  # each job at its first failure


def test_a_job_counts_at_its_first_failure() -> None:
    """A job that failed first long ago and again now does not join a window with today's jobs."""
    rule = StrikeRule(RULE.reasons, 3, timedelta(hours=1))
    old_job = [Strike("ev-a", FACE, "ada", "job-a", "spam_risk", T0),
               Strike("ev-b", FACE, "ada", "job-a", "spam_risk", T0 + timedelta(hours=10))]
    today = [Strike(f"ev-{i}", FACE, "ada", f"job-{i}", "spam_risk", T0 + timedelta(hours=10, minutes=i))
             for i in range(2)]
    assert rule.judge(FACE, "ada", old_job + today, None) is None
    assert [s.event_id for s in first_per_job(old_job + today)] == ["ev-a", "ev-0", "ev-1"]


def test_strike_reasons_come_from_the_setting() -> None:
    assert RULE.is_strike("spam_risk") and not RULE.is_strike("spec_check_failed")


# ------------------------------------------------------------------------------ elimination


ELIMINATE = EliminationRule(threshold=0.1, min_posts=10)


def test_a_template_under_the_threshold_after_enough_posts_becomes_a_candidate_once() -> None:
    prior = Prior(1, 1)
    few = Posterior.of(prior, ArmStats(9, 0.0, 180.0))
    assert ELIMINATE.judge("t1", few, None) is None  # too few posts yet, however bad
    enough = Posterior.of(prior, ArmStats(20, 0.0, 20.0))  # mean 1/22
    flag = ELIMINATE.judge("t1", enough, None)
    assert flag is not None and (flag.kind, flag.action) == (TEMPLATE_KIND, ELIMINATION_CANDIDATE)
    assert flag.evidence["posts"] == 20 and flag.evidence["mean"] == pytest.approx(1 / 22)
    low, high = flag.evidence["ci95"]
    assert low < 1 / 22 < high
    assert ELIMINATE.judge("t1", enough, ELIMINATION_CANDIDATE) is None  # not again
    assert ELIMINATE.judge("t1", enough, DISABLED) is None


def test_a_candidate_whose_mean_recovers_is_cleared() -> None:
    recovered = Posterior.of(Prior(1, 1), ArmStats(20, 5.0, 15.0))
    flag = ELIMINATE.judge("t1", recovered, ELIMINATION_CANDIDATE)
    assert flag is not None and flag.action == CLEARED
    assert ELIMINATE.judge("t1", recovered, None) is None
