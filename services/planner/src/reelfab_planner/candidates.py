"""The candidate space and its scoring, vectorised.

Candidates are subjects × templates × music beds × caption styles. Consent decides which subject ×
template pairs exist (a subject's allowed tags must cover every tag of the template: one boolean matmul
over a tag vocabulary, not a loop over pairs); combinations already produced, disabled arms and subjects
without jobs left today are cut out. A plan draws one Thompson sample per arm of each space
(reelfab_planner.policy) and a candidate's score is their sum, built by broadcasting into one
(S, T, M, C) float32 array: 10M candidates are ~40 MB and a handful of vector operations.

The batch is then chosen from the best-scored candidates under the diversity cap (no subject and no
template above ``max_share`` of the batch) and each subject's jobs left today; that pass walks a
shortlist a few times the batch long (taken with argpartition), widening it only when the caps leave it
short."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from reelfab.contracts.arms import MUSIC, NO_MUSIC, STYLE, SUBJECT, TEMPLATE, Combination, parse_arm_id

from .policy import Policy


@dataclass(frozen=True)
class SubjectOption:
    """A subject the consent view allows planning for, with what bounds its jobs."""

    subject_id: str
    consent_version: int
    image_sha256: str
    allowed_tags: frozenset[str] = frozenset()  # empty: any template tag
    jobs_left: int | None = None  # the daily cap minus today's planned jobs; None: no cap


@dataclass(frozen=True)
class Space:
    subjects: Sequence[SubjectOption]
    template_ids: Sequence[str]
    template_tags: Sequence[frozenset[str]]
    music_ids: Sequence[str | None]  # None: no music bed
    style_ids: Sequence[str]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.subjects), len(self.template_ids), len(self.music_ids), len(self.style_ids)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def pair_ok(self) -> NDArray[np.bool_]:
        """(S, T): whether the subject's consent covers every tag of the template."""
        vocabulary = sorted(set().union(*self.template_tags, *(s.allowed_tags for s in self.subjects)))
        column = {tag: c for c, tag in enumerate(vocabulary)}
        has = np.zeros((len(self.template_ids), len(vocabulary)), dtype=np.float32)
        for t, tags in enumerate(self.template_tags):  # one row per template
            has[t, [column[tag] for tag in tags]] = 1.0
        outside = np.ones((len(self.subjects), len(vocabulary)), dtype=np.float32)
        for s, subject in enumerate(self.subjects):  # one row per subject
            if not subject.allowed_tags:
                outside[s] = 0.0
            else:
                outside[s, [column[tag] for tag in subject.allowed_tags]] = 0.0
        # a template tag outside a subject's allowed tags makes the pair impossible
        ok: NDArray[np.bool_] = (outside @ has.T) == 0.0
        return ok

    def indices(self, combination: Combination) -> tuple[int, int, int, int] | None:
        """Where ``combination`` sits in the space, or None when one of its parts is not in it."""
        lookup = self._lookup
        s = lookup[0].get(combination.subject)
        t = lookup[1].get(combination.template)
        m = lookup[2].get(combination.music or NO_MUSIC)
        c = lookup[3].get(combination.style)
        return None if s is None or t is None or m is None or c is None else (s, t, m, c)

    @property
    def _lookup(self) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            cached = (
                {s.subject_id: i for i, s in enumerate(self.subjects)},
                {t: i for i, t in enumerate(self.template_ids)},
                {(m or NO_MUSIC): i for i, m in enumerate(self.music_ids)},
                {c: i for i, c in enumerate(self.style_ids)},
            )
            object.__setattr__(self, "_lookup_cache", cached)
        return cached

    def combination(self, at: tuple[int, int, int, int]) -> Combination:
        s, t, m, c = at
        return Combination(self.subjects[s].subject_id, self.template_ids[t], self.music_ids[m], self.style_ids[c])


def score(space: Space, policy: Policy, rng: np.random.Generator, *, exclude: Iterable[str] = ()) -> NDArray[np.float32]:
    """The (S, T, M, C) scores of one Thompson draw; -inf where a candidate may not be planned (consent,
    a disabled arm, a subject without jobs left, or an arm id in ``exclude``: combinations produced)."""
    subject_ids = [s.subject_id for s in space.subjects]
    music_arms = [m or NO_MUSIC for m in space.music_ids]
    out = np.empty(space.shape, dtype=np.float32)
    out[...] = policy.sample_pairs(subject_ids, space.template_ids, rng)[:, :, None, None]
    out += policy.sample(SUBJECT, subject_ids, rng)[:, None, None, None]
    out += policy.sample(TEMPLATE, space.template_ids, rng)[None, :, None, None]
    out += policy.sample(MUSIC, music_arms, rng)[None, None, :, None]
    out += policy.sample(STYLE, space.style_ids, rng)[None, None, None, :]
    out[~space.pair_ok()] = -np.inf
    spent = np.array([s.jobs_left is not None and s.jobs_left <= 0 for s in space.subjects], dtype=bool)
    out[spent] = -np.inf
    produced = [at for arm_id in exclude if (at := space.indices(parse_arm_id(arm_id))) is not None]
    if produced:
        out[tuple(np.array(produced).T)] = -np.inf
    return out


@dataclass(frozen=True)
class Selection:
    picks: list[tuple[int, int, int, int]]  # best first
    available: int  # candidates that could be planned at all
    limits: list[str] = field(default_factory=list)  # why fewer than asked, in words


def select(space: Space, scores: NDArray[np.float32], count: int, *, max_share: float,
           template_share: float | None = None) -> Selection:
    """The best ``count`` candidates under the diversity cap and the subjects' jobs left.
    ``template_share``: the per-template cap when it differs from the subjects' (a trend's batch: the
    trend chose its templates, so they are not spread; 1.0 lifts the cap)."""
    flat = scores.reshape(-1)
    available = int(np.count_nonzero(np.isfinite(flat)))
    want = min(count, available)
    limits: list[str] = []
    if available < count:
        limits.append(f"only {available} candidate(s) can be planned; asked for {count}")
    if want == 0:
        return Selection([], available, limits)
    cap = max(1, math.ceil(max_share * want))
    template_cap = cap if template_share is None else max(1, math.ceil(template_share * want))
    left = [s.jobs_left for s in space.subjects]
    shortlist = min(available, max(8 * want, 64))
    while True:
        picks = _pick(space.shape, flat, shortlist, want, cap, template_cap, left)
        if len(picks) == want or shortlist == available:
            break
        shortlist = min(available, 4 * shortlist)
    if len(picks) < want:
        per = f"{cap} per subject and per template" if template_cap == cap else \
            f"{cap} per subject, {template_cap} per template"
        limits.append(f"the diversity cap ({max_share:.0%} of the batch: {per}) and the subjects' daily caps allow "
                      f"{len(picks)}")
    return Selection(picks, available, limits)


def _pick(shape: tuple[int, int, int, int], flat: NDArray[np.float32], shortlist: int, want: int, cap: int,
          template_cap: int, jobs_left: Sequence[int | None]) -> list[tuple[int, int, int, int]]:
    best = np.argpartition(-flat, shortlist - 1)[:shortlist]
    best = best[np.argsort(-flat[best], kind="stable")]
    best = best[np.isfinite(flat[best])]
    s_idx, t_idx, m_idx, c_idx = np.unravel_index(best, shape)
    per_subject: dict[int, int] = {}
    per_template: dict[int, int] = {}
    picks: list[tuple[int, int, int, int]] = []
    for s, t, m, c in zip(s_idx.tolist(), t_idx.tolist(), m_idx.tolist(), c_idx.tolist(), strict=True):  # the shortlist only
        used = per_subject.get(s, 0)
        left = jobs_left[s]
        if used >= cap or per_template.get(t, 0) >= template_cap or (left is not None and used >= left):
            continue
        per_subject[s] = used + 1
        per_template[t] = per_template.get(t, 0) + 1
        picks.append((s, t, m, c))
        if len(picks) == want:
            break
    return picks
