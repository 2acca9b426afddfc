"""The planner's scoring and batch planning on a large catalogue.

Scores the full candidate space of 100 subjects × 1,000 templates × 20 music beds × 5 caption styles
(10M candidates: consent's tag rule per pair, one Thompson draw per arm, the sum per candidate, produced
combinations and disabled arms cut out) the way the planner does (reelfab_planner.candidates), beside a
naive per-candidate Python loop computing the same scores over a 100k sample (its time extrapolated to
10M); then times planning a batch of 100 end to end (plan_batch: consent per subject, model choice,
scoring, the diversity pass, the jobs). The policy holds posteriors for a share of every space's arms.

    .venv/bin/python bench/planner.py [--subjects 100 --templates 1000 --music 20 --styles 5 --runs 3]

The last line reads ``planner: <N> candidates scored in <T> s`` (the best full-space scoring)."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope
from reelfab.contracts.arms import (
    MUSIC,
    NO_MUSIC,
    STYLE,
    SUBJECT,
    SUBJECT_TEMPLATE,
    TEMPLATE,
    Combination,
    pair_arm,
)
from reelfab_planner.candidates import Space, SubjectOption, score, select
from reelfab_planner.catalogue import CaptionStyle, MusicBed, Template
from reelfab_planner.model_rules import manifest_licences, parse_rules
from reelfab_planner.plan import Inputs, PlanConfig, PlanRequest, plan_batch
from reelfab_planner.policy import Policy

TAGS = ("dance", "talk", "react", "comedy", "fitness", "food", "travel", "music")
NOW = datetime.now(UTC)


def catalogue(n_subjects: int, n_templates: int, n_music: int, n_styles: int, rng: np.random.Generator) -> tuple[
        list[LeaseTerms], list[Template], list[MusicBed], list[CaptionStyle]]:
    terms = []
    for i in range(n_subjects):
        allowed = () if i % 3 == 0 else tuple(rng.choice(TAGS, 5, replace=False))  # a third allow any tag
        terms.append(LeaseTerms(f"subject-{i}", 1, "GRANTED", Scope(("tiktok",), allowed, (), False), NOW - timedelta(days=1),
                                NOW + timedelta(days=30), None, (EnrolledImageRef(f"{i:064x}", "0" * 16, "dlib"),),
                                "d" * 64, "e" * 64, NOW))
    templates = [Template(f"template-{j}", f"file:///t/{j}.mp4", f"{j:064x}", tuple(rng.choice(TAGS, 2, replace=False)), 16.0,
                          720, 1280, "close-up" if j % 2 else "wide", 1.0, None, False, NOW) for j in range(n_templates)]
    music = [MusicBed(f"music-{k}", f"file:///m/{k}.m4a", f"{k:064x}", ("pop",), "CC-BY-4.0", True, 30.0, NOW)
             for k in range(n_music)]
    styles = [CaptionStyle(f"style-{c}", (f"caption {c}",)) for c in range(n_styles)]
    return terms, templates, music, styles


def policy_for(terms: list[LeaseTerms], templates: list[Template], music: list[MusicBed], styles: list[CaptionStyle],
               rng: np.random.Generator) -> Policy:
    """Posteriors for half the subjects, templates, beds and styles and 5,000 subject×template pairs."""
    def arms(ids: list[str]) -> list[dict[str, object]]:
        out = []
        for arm_id in ids:
            a, b = 1 + rng.integers(0, 200), 1 + rng.integers(0, 800)
            out.append({"arm_id": arm_id, "alpha": float(a), "beta": float(b), "pulls": int(a + b), "mean": a / (a + b)})
        return out

    policy = Policy()
    policy.apply(SUBJECT, 1, arms([t.subject for t in terms[::2]]), None)
    policy.apply(TEMPLATE, 1, arms([t.template_id for t in templates[::2]]), None)
    policy.apply(MUSIC, 1, arms([m.music_id for m in music[::2]]), None)
    policy.apply(STYLE, 1, arms([s.style_id for s in styles[::2]]), None)
    pairs = {pair_arm(terms[int(i)].subject, templates[int(j)].template_id)
             for i, j in zip(rng.integers(0, len(terms), 5000), rng.integers(0, len(templates), 5000), strict=True)}
    policy.apply(SUBJECT_TEMPLATE, 1, arms(sorted(pairs)), None)
    return policy


def naive_scores(space: Space, policy: Policy, sample: NDArray[np.int64], rng: np.random.Generator) -> list[float]:
    """What the vectorised scoring computes, one candidate at a time: the baseline."""
    draws: dict[str, dict[str, float]] = {space_name: {} for space_name in (SUBJECT, TEMPLATE, MUSIC, STYLE, SUBJECT_TEMPLATE)}  # one draw per arm
    out = []
    S, T, M, C = space.shape
    for flat in sample.tolist():
        s, rest = divmod(flat, T * M * C)
        t, rest = divmod(rest, M * C)
        m, c = divmod(rest, C)
        subject = space.subjects[s]
        tags = space.template_tags[t]
        if subject.allowed_tags and not tags <= subject.allowed_tags:
            out.append(float("-inf"))
            continue
        total = 0.0
        for name, arm in ((SUBJECT, subject.subject_id), (TEMPLATE, space.template_ids[t]),
                          (MUSIC, space.music_ids[m] or NO_MUSIC), (STYLE, space.style_ids[c])):
            if arm not in draws[name]:
                p = policy.arm(name, arm)
                draws[name][arm] = float(rng.beta(p.alpha, p.beta)) if not p.disabled else float("-inf")
            total += draws[name][arm]
        pair = pair_arm(subject.subject_id, space.template_ids[t])
        if pair not in draws[SUBJECT_TEMPLATE]:
            held = policy.spaces.get(SUBJECT_TEMPLATE, {}).get(pair)
            draws[SUBJECT_TEMPLATE][pair] = 0.0 if held is None else (float(rng.beta(held.alpha, held.beta)) - 0.5) * held.pulls / (held.pulls + 5)
        out.append(total + draws[SUBJECT_TEMPLATE][pair])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--templates", type=int, default=1000)
    parser.add_argument("--music", type=int, default=20)
    parser.add_argument("--styles", type=int, default=5)
    parser.add_argument("--sample", type=int, default=100_000, help="candidates the naive loop scores")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    terms, templates, music, styles = catalogue(args.subjects, args.templates, args.music, args.styles, rng)
    policy = policy_for(terms, templates, music, styles, rng)
    subjects = [SubjectOption(t.subject, 1, t.images[0].sha256, frozenset(t.scope.allowed_tags)) for t in terms]
    space = Space(subjects, [t.template_id for t in templates], [frozenset(t.tags) for t in templates],
                  [m.music_id for m in music], [s.style_id for s in styles])
    produced = [Combination(terms[i].subject, templates[j].template_id, music[0].music_id, styles[0].style_id).arm_id
                for i, j in zip(rng.integers(0, len(terms), 2000), rng.integers(0, len(templates), 2000), strict=True)]
    n = space.size
    print(f"candidate space: {len(terms)} subjects x {len(templates)} templates x {len(music)} music x {len(styles)} styles "
          f"= {n:,} candidates; {len(produced):,} produced combinations excluded")

    full = []
    for run in range(args.runs):
        started = time.perf_counter()
        scores = score(space, policy, np.random.default_rng(run), exclude=produced)
        full.append(time.perf_counter() - started)
    plannable = int(np.isfinite(scores).sum())
    sample = rng.choice(n, size=min(args.sample, n), replace=False)
    started = time.perf_counter()
    naive_scores(space, policy, sample, np.random.default_rng(0))
    naive = time.perf_counter() - started
    naive_full = naive * n / len(sample)
    best = min(full)
    print(f"score the full space (best of {args.runs}): {best:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in full)}); "
          f"{plannable:,} plannable")
    print(f"naive per-candidate loop: {len(sample):,} in {naive:.3f} s -> {naive_full:.1f} s extrapolated to {n:,}")
    print(f"ratio naive/vectorised: {naive_full / best:.0f}x")

    selects = []
    for _run in range(args.runs):
        started = time.perf_counter()
        select(space, scores, args.batch, max_share=0.25)
        selects.append(time.perf_counter() - started)
    print(f"select a batch of {args.batch} from the scored space (median): {statistics.median(selects):.3f} s")

    config = PlanConfig("tiktok", False, 0.25, "onnx", parse_rules("close-up:hyperswap_1a_256,ghost_2_256;wide:inswapper_128,ghost_1_256"),
                        manifest_licences(), 10, 20)
    inputs = Inputs({t.subject: t for t in terms}, {}, templates, music, styles, policy, frozenset(produced), frozenset(), {})
    plans = []
    for run in range(args.runs):
        started = time.perf_counter()
        plan = plan_batch(PlanRequest(f"bench-{run}", args.batch, NOW, seed=run), inputs, config)
        plans.append(time.perf_counter() - started)
        assert len(plan.jobs) == args.batch, plan.notes
    print(f"plan a batch of {args.batch} end to end (plan_batch, median of {args.runs}): {statistics.median(plans):.3f} s "
          f"(runs: {', '.join(f'{t:.3f}' for t in plans)})")
    print(f"planner: {n} candidates scored in {best:.3f} s")


if __name__ == "__main__":
    main()
