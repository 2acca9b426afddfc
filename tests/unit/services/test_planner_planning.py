"""The planner's decisions, broker-free: which candidates consent allows, no repeats, the diversity cap,
model choice by rule and licence, trends, the policy (Thompson sampling) and a seeded simulation where
one subject truly performs better."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from reelfab.contracts.arms import ARM_SPACES, Combination, parse_arm_id
from reelfab.settings import Settings
from reelfab_planner.candidates import Space, SubjectOption, score, select
from reelfab_planner.plan import PlanRequest, TrendAsk, plan_batch
from reelfab_planner.policy import Policy
from tests.unit.services.planner_samples import NOW, arms, config, inputs, music, template, terms


def request(count: int, **kw: object) -> PlanRequest:
    return PlanRequest(plan_id="plan-t", count=count, now=NOW, seed=kw.pop("seed", 7), **kw)  # type: ignore[arg-type]


def planned_subjects(plan: object) -> set[str]:
    return {job.combination.subject for job in plan.jobs}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------- consent


@pytest.mark.parametrize(("lease", "reason"), [
    (terms("x", status="REVOKED"), "revoked"),
    (terms("x", status="ERASED"), "erased"),
    (terms("x", status="EXPIRED"), "expired"),
    (terms("x", valid_until=NOW - timedelta(seconds=1)), "expired"),
    (terms("x", valid_from=NOW + timedelta(hours=1)), "not_yet_valid"),
    (terms("x", platforms=("instagram",)), "out_of_scope_platform"),
])
def test_each_consent_rule_leaves_out_exactly_its_subject(lease: object, reason: str) -> None:
    plan = plan_batch(request(50), inputs([terms("ok-1"), lease, terms("ok-2")], [template("t1"), template("t2")]),  # type: ignore[list-item]
                      config())
    assert planned_subjects(plan) == {"ok-1", "ok-2"}
    assert plan.excluded["x"].startswith(reason)
    assert len(plan.jobs) == 4  # 2 subjects x 2 templates, no more


def test_commercial_mode_needs_commercial_consent_and_licensed_music() -> None:
    subjects = [terms("pro", commercial=True), terms("amateur", commercial=False)]
    beds = [music("free", commercial=True), music("nc", commercial=False)]
    plan = plan_batch(request(50), inputs(subjects, [template("t1")], beds=beds), config(commercial=True, backend="onnx"))
    assert planned_subjects(plan) == {"pro"}
    assert plan.excluded["amateur"].startswith("commercial_not_allowed")
    assert {job.combination.music for job in plan.jobs} == {"free"}
    # out of commercial mode both subjects and both beds may be used
    plan = plan_batch(request(50), inputs(subjects, [template("t1")], beds=beds), config(commercial=False))
    assert planned_subjects(plan) == {"pro", "amateur"} and len(plan.jobs) == 4


def test_allowed_tags_decide_per_template() -> None:
    subjects = [terms("dancer", tags=("dance",)), terms("anything")]
    templates = [template("d", "dance"), template("c", "comedy"), template("dc", "dance", "comedy")]
    plan = plan_batch(request(50), inputs(subjects, templates), config())
    pairs = {(j.combination.subject, j.combination.template) for j in plan.jobs}
    assert pairs == {("dancer", "d"), ("anything", "d"), ("anything", "c"), ("anything", "dc")}


def test_daily_cap_counts_todays_planned_jobs() -> None:
    subjects = [terms("capped", daily_cap=3), terms("spent", daily_cap=2), terms("free")]
    templates = [template(f"t{i}") for i in range(6)]
    plan = plan_batch(request(50), inputs(subjects, templates, planned_today={"capped": 1, "spent": 2}), config())
    per = Counter(j.combination.subject for j in plan.jobs)
    assert per["capped"] == 2 and "spent" not in per and per["free"] == 6
    assert "daily cap" in plan.excluded["spent"]


def test_flags_suspect_leases_and_retired_templates_are_left_out() -> None:
    subjects = [terms("a"), terms("flagged"), terms("unverified")]
    templates = [template("t1"), template("old", retired=True), template("bad")]
    plan = plan_batch(request(50), inputs(subjects, templates, beds=[music("m1"), music("m2")],
                                          disabled=[("FACE", "flagged"), ("TEMPLATE", "bad"), ("MUSIC", "m2")],
                                          suspect={"unverified": "signature does not verify"}), config())
    assert {(j.combination.subject, j.combination.template, j.combination.music) for j in plan.jobs} == {("a", "t1", "m1")}
    assert "flagged" in plan.excluded and "unverified" in plan.excluded


# -------------------------------------------------------------------------------- repeats and caps


def test_no_repeats_unless_asked_and_a_request_larger_than_the_space() -> None:
    subjects, templates = [terms("a"), terms("b")], [template("t1"), template("t2")]
    first = plan_batch(request(3), inputs(subjects, templates), config())
    made = {j.combination.arm_id for j in first.jobs}
    assert len(made) == 3
    second = plan_batch(request(10), inputs(subjects, templates, produced=made), config())
    assert len(second.jobs) == 1 and not made & {j.combination.arm_id for j in second.jobs}
    assert second.notes and "only 1 candidate" in second.notes[0] and "asked for 10" in second.notes[0]
    again = plan_batch(request(10, allow_repeats=True), inputs(subjects, templates, produced=made), config())
    assert len(again.jobs) == 4


def test_the_diversity_cap_holds() -> None:
    subjects = [terms(f"s{i}") for i in range(6)]
    templates = [template(f"t{i}") for i in range(6)]
    policy = Policy()
    policy.apply("subject", 1, arms(s0=(90, 10)), None)  # s0 would take the whole batch without the cap
    plan = plan_batch(request(8), inputs(subjects, templates, policy=policy), config(max_share=0.25))
    assert len(plan.jobs) == 8
    assert max(Counter(j.combination.subject for j in plan.jobs).values()) <= 2
    assert max(Counter(j.combination.template for j in plan.jobs).values()) <= 2
    assert Counter(j.combination.subject for j in plan.jobs)["s0"] == 2
    # one subject only: the cap leaves the batch short, and the plan says why
    plan = plan_batch(request(8), inputs([terms("solo")], templates), config(max_share=0.25))
    assert len(plan.jobs) == 2 and any("diversity cap" in n for n in plan.notes)


# ------------------------------------------------------------------------------------- model choice


def test_model_by_shot_and_licence() -> None:
    templates = [template("close", shot="close-up"), template("wide", shot="wide")]
    subjects = [terms("a", commercial=True)]
    models = {j.combination.template: j.model.model
              for j in plan_batch(request(9), inputs(subjects, templates), config(backend="onnx")).jobs}
    assert models == {"close": "hyperswap_1a_256", "wide": "inswapper_128"}
    models = {j.combination.template: j.model.model
              for j in plan_batch(request(9), inputs(subjects, templates), config(backend="onnx", commercial=True)).jobs}
    assert models == {"close": "ghost_2_256", "wide": "ghost_1_256"}  # Apache-2.0: commercial use allowed
    classical = plan_batch(request(9), inputs(subjects, templates), config(backend="classical"))
    assert {j.model.model for j in classical.jobs} == {"classical"}
    refused = plan_batch(request(9), inputs(subjects, templates), config(backend="classical", commercial=True))
    assert refused.jobs == [] and any("classical backend cannot make commercial jobs" in n for n in refused.notes)


# ------------------------------------------------------------------------------------------- trends


def test_a_trend_selects_templates_by_tag_and_goes_out_urgent() -> None:
    deadline = NOW + timedelta(hours=3)
    subjects = [terms("a"), terms("b", tags=("dance",))]
    templates = [template("d1", "dance"), template("d2", "dance", "comedy"), template("c1", "comedy"), template("z", "fitness")]
    trend = TrendAsk("tr-1", frozenset({"comedy"}), deadline, 2)
    plan = plan_batch(request(20, trend=trend), inputs(subjects, templates), config())
    assert len(plan.jobs) == 2  # the trend's max_jobs
    assert {j.combination.template for j in plan.jobs} <= {"d2", "c1"}
    assert {j.combination.subject for j in plan.jobs} == {"a"}  # b's consent allows dance only
    assert all(j.priority == 10 and j.deadline == deadline and j.trend_id == "tr-1" for j in plan.jobs)


def test_a_trend_spreads_its_jobs_over_subjects_not_over_the_templates_it_chose() -> None:
    subjects = [terms(f"s{i}") for i in range(4)]
    templates = [template("hit", "challenge"), template("other", "dance")]
    trend = TrendAsk("tr-1", frozenset({"challenge"}), NOW + timedelta(hours=1), 4)
    plan = plan_batch(request(20, trend=trend), inputs(subjects, templates), config(max_share=0.25))
    assert len(plan.jobs) == 4 and {j.combination.template for j in plan.jobs} == {"hit"}
    assert Counter(j.combination.subject for j in plan.jobs) == {f"s{i}": 1 for i in range(4)}  # the subject cap holds
    batch = plan_batch(request(4), inputs(subjects, [template("hit", "challenge")]), config(max_share=0.25))
    assert len(batch.jobs) == 1  # an ordinary batch still spreads over templates


def test_a_trend_with_unknown_tags_or_past_its_deadline_plans_nothing_and_says_so() -> None:
    base = inputs([terms("a")], [template("d1", "dance")])
    unknown = plan_batch(request(5, trend=TrendAsk("tr", frozenset({"knitting"}), None, None)), base, config())
    assert unknown.jobs == [] and any("no template matches" in n and "knitting" in n for n in unknown.notes)
    late = plan_batch(request(5, trend=TrendAsk("tr", frozenset({"dance"}), NOW - timedelta(minutes=1), None)), base, config())
    assert late.jobs == [] and any("past its deadline" in n for n in late.notes)


# --------------------------------------------------------------------------------------------- policy


def test_policy_unknown_arms_restarted_versions_and_disabled_arms() -> None:
    policy = Policy()
    update = policy.apply("subject", 3, arms(a=(5, 1), ghost=(9, 1)), known={"a", "b"})
    assert update.applied and update.arms == 1 and update.unknown == 1 and not update.detail
    assert policy.arm("subject", "a").alpha == 5
    restarted = policy.apply("subject", 1, arms(a=(1, 9)), known={"a"})  # analytics' database was reset
    assert restarted.applied and "restarted" in restarted.detail
    assert policy.arm("subject", "a").alpha == 1 and policy.versions["subject"] == 1
    assert not policy.apply("no-such-space", 1, [], None).applied
    policy.apply("template", 1, arms(t1=(50, 1, True)), None)  # the best arm, disabled
    plan = plan_batch(request(10), inputs([terms("a")], [template("t1"), template("t2")], policy=policy), config())
    assert {j.combination.template for j in plan.jobs} == {"t2"}


def test_no_data_explores_evenly() -> None:
    subjects = [terms(f"s{i}") for i in range(4)]
    picks: Counter[str] = Counter()
    for seed in range(400):
        plan = plan_batch(request(1, seed=seed), inputs(subjects, [template("t1")]), config())
        picks[plan.jobs[0].combination.subject] += 1
    assert all(60 <= n <= 140 for n in picks.values()), picks  # about 100 each


def test_scores_are_the_sum_of_one_draw_per_arm() -> None:
    space = Space([SubjectOption("a", 1, "x"), SubjectOption("b", 1, "x")], ["t1", "t2", "t3"],
                  [frozenset({"dance"})] * 3, ["m1", None], ["s1"])
    scores = score(space, Policy(), np.random.default_rng(1))
    assert scores.shape == (2, 3, 2, 1) and np.isfinite(scores).all()
    # the subject's draw is shared by all its candidates: differences along music/style come from them alone
    diff_music = scores[:, :, 0, 0] - scores[:, :, 1, 0]
    assert np.allclose(diff_music, diff_music[0, 0])
    produced = Combination("a", "t2", None, "s1").arm_id
    scores = score(space, Policy(), np.random.default_rng(1), exclude=[produced])
    assert np.isneginf(scores[0, 1, 1, 0]) and np.isfinite(scores).sum() == 11
    assert len(select(space, scores, 100, max_share=1.0).picks) == 11


# ------------------------------------------------------------------------------------------ learning


def test_thompson_sampling_learns_the_better_subject_within_200_posts() -> None:
    """Seeded simulation: five subjects, one truly better (completion 0.28 against 0.20). Each post's
    reward is its observed completion rate; posteriors are updated as analytics does (a post counts as
    ``analytics_post_weight`` Bernoulli trials at its rate) and handed back to the planner as the policy."""
    weight = Settings().analytics_post_weight
    truth = {"s0": 0.20, "s1": 0.20, "best": 0.28, "s3": 0.20, "s4": 0.20}
    subjects = [terms(s) for s in truth]
    templates = [template("t1"), template("t2")]
    rng = np.random.default_rng(2030)
    posteriors: dict[str, dict[str, list[float]]] = {space: {} for space in ARM_SPACES}
    policy, chosen, regret = Policy(), [], 0.0
    for post in range(200):
        plan = plan_batch(request(1, seed=post, allow_repeats=True), inputs(subjects, templates, policy=policy), config())
        combination = plan.jobs[0].combination
        p = truth[combination.subject]
        chosen.append(combination.subject)
        regret += max(truth.values()) - p
        reward = rng.binomial(500, p) / 500
        for space, arm in parse_arm_id(combination.arm_id).arms().items():
            a_b = posteriors[space].setdefault(arm, [1.0, 1.0])
            a_b[0] += weight * reward
            a_b[1] += weight * (1 - reward)
        for space, held in posteriors.items():
            policy.apply(space, post, arms(**{arm: (a, b) for arm, (a, b) in held.items()}), None)
    late_share = chosen[-50:].count("best") / 50
    uniform_regret = 200 * (max(truth.values()) - sum(truth.values()) / len(truth))
    print(f"\nThompson: best subject in {late_share:.0%} of the last 50 plans; cumulative regret "
          f"{regret:.1f} vs uniform planning {uniform_regret:.1f}")
    assert late_share >= 0.7
    assert regret < uniform_regret
