"""Planning a batch: which subjects consent allows, which templates a request (or a trend) selects,
the candidate space, one Thompson draw, the batch under the caps, and a job per pick with its model
and lineage. Pure: the handlers and the CLI hand it what the view, the catalogue, the policy and the
ledger hold, and write what it returns."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from reelfab.consent.decision import ConsentRequest, decide
from reelfab.consent.lease import LeaseTerms
from reelfab.contracts.arms import Combination

from .candidates import Space, SubjectOption, score, select
from .catalogue import CaptionStyle, MusicBed, Template
from .model_rules import ModelPick, NoModel, pick_model
from .policy import Policy

FACE, TEMPLATE_KIND, MUSIC_KIND, STYLE_KIND = "FACE", "TEMPLATE", "MUSIC", "CAPTION_STYLE"


@dataclass(frozen=True)
class PlanConfig:
    platform: str
    commercial: bool
    max_share: float
    backend: str  # the swap backend the jobs are for: classical, onnx, facefusion
    model_rules: Mapping[str, Sequence[str]]
    licences: Mapping[str, tuple[str, bool]]
    trend_priority: int
    trend_max_jobs: int
    subjects: frozenset[str] | None = None  # plan only these subjects (REELFAB_PLANNER_SUBJECTS); None: all


@dataclass(frozen=True)
class TrendAsk:
    trend_id: str
    tags: frozenset[str]
    deadline: datetime | None
    max_jobs: int | None
    title: str = ""


@dataclass(frozen=True)
class PlanRequest:
    plan_id: str
    count: int
    now: datetime
    allow_repeats: bool = False
    trend: TrendAsk | None = None
    seed: int | None = None  # None: a fresh draw


@dataclass(frozen=True)
class Inputs:
    """What planning reads, as the planner holds it at the moment of the plan."""

    terms: Mapping[str, LeaseTerms]  # the consent view: latest verified lease per subject
    suspect: Mapping[str, str]  # subjects whose latest consent event did not verify
    templates: Sequence[Template]  # not retired
    music: Sequence[MusicBed]
    styles: Sequence[CaptionStyle]
    policy: Policy
    produced: frozenset[str]  # arm ids of combinations made (or on their way)
    disabled: frozenset[tuple[str, str]]  # (kind, id) flagged as disabled
    planned_today: Mapping[str, int]  # subject -> jobs planned today that did not fail


@dataclass(frozen=True)
class PlannedJob:
    job_id: str
    combination: Combination
    subject: SubjectOption
    template: Template
    music: MusicBed | None
    style: CaptionStyle
    model: ModelPick
    caption: str
    priority: int = 0
    deadline: datetime | None = None
    trend_id: str | None = None


@dataclass(frozen=True)
class Plan:
    plan_id: str
    jobs: list[PlannedJob]
    candidates: int  # the size of the space scored
    available: int  # how many of them could be planned
    notes: list[str] = field(default_factory=list)  # why fewer than asked, what was left out, in words
    excluded: dict[str, str] = field(default_factory=dict)  # subject -> why consent or a flag left it out

    @property
    def expedited(self) -> bool:
        return any(job.priority > 0 for job in self.jobs)


def plan_batch(request: PlanRequest, inputs: Inputs, config: PlanConfig) -> Plan:
    notes: list[str] = []
    subjects, excluded = subject_options(inputs, config, request.now)
    templates, template_notes = _templates(request, inputs, config)
    notes += template_notes
    music: list[MusicBed | None] = [m for m in inputs.music if (MUSIC_KIND, m.music_id) not in inputs.disabled
                                    and (m.commercial or not config.commercial)]
    if not music:
        music = [None]  # no bed (or none licensed for this use): the videos go out with the template's sound
    styles = [s for s in inputs.styles if (STYLE_KIND, s.style_id) not in inputs.disabled]
    count = request.count
    priority, deadline, trend_id = 0, None, None
    if request.trend is not None:
        trend = request.trend
        count = min(count, trend.max_jobs or config.trend_max_jobs, config.trend_max_jobs)
        priority, deadline, trend_id = config.trend_priority, trend.deadline, trend.trend_id
        if deadline is not None and deadline <= request.now:
            return Plan(request.plan_id, [], 0, 0, [*notes, f"trend {trend.trend_id} is past its deadline {deadline.isoformat()}"],
                        excluded)
    if not subjects or not templates or not styles:
        missing = [name for name, have in (("subjects with consent", subjects), ("templates", templates),
                                           ("caption styles", styles)) if not have]
        return Plan(request.plan_id, [], 0, 0, [*notes, f"nothing to plan: no {', no '.join(missing)}"], excluded)
    space = Space(subjects, [t.template_id for t, _ in templates], [frozenset(t.tags) for t, _ in templates],
                  [m.music_id if m else None for m in music], [s.style_id for s in styles])
    rng = np.random.default_rng(request.seed)
    scores = score(space, inputs.policy, rng, exclude=() if request.allow_repeats else inputs.produced)
    selection = select(space, scores, count, max_share=config.max_share,
                       template_share=1.0 if request.trend is not None else None)  # a trend chose its templates
    notes += selection.limits
    jobs = []
    for at in selection.picks:
        s, t, m, c = at
        template, pick = templates[t]
        combination = space.combination(at)
        style = styles[c]
        jobs.append(PlannedJob(
            job_id=f"job-{uuid.uuid4().hex[:12]}", combination=combination, subject=subjects[s], template=template,
            music=music[m], style=style, model=pick, caption=style.caption_for(_seed(request.plan_id, combination.arm_id)),
            priority=priority, deadline=deadline, trend_id=trend_id,
        ))
    return Plan(request.plan_id, jobs, space.size, selection.available, notes, excluded)


def subject_options(inputs: Inputs, config: PlanConfig, now: datetime) -> tuple[list[SubjectOption], dict[str, str]]:
    """The subjects consent allows planning for (one decision per subject, the tags per pair later)."""
    options: list[SubjectOption] = []
    excluded: dict[str, str] = {}
    for subject, terms in sorted(inputs.terms.items()):
        if subject in inputs.suspect:
            excluded[subject] = f"consent could not be verified: {inputs.suspect[subject]}"
            continue
        if (FACE, subject) in inputs.disabled:
            excluded[subject] = "disabled (flagged)"
            continue
        decision = decide(terms, ConsentRequest(subject, "plan", config.platform, now, (), commercial=config.commercial))
        if not decision.allowed:
            excluded[subject] = f"{decision.reason}: {decision.detail}"
            continue
        if not terms.images:
            excluded[subject] = "no enrolled image"
            continue
        left = None if terms.daily_cap is None else terms.daily_cap - inputs.planned_today.get(subject, 0)
        if left is not None and left <= 0:
            excluded[subject] = f"daily cap of {terms.daily_cap} reached by today's planned jobs"
            continue
        options.append(SubjectOption(subject, terms.consent_version, terms.images[0].sha256,
                                     frozenset(tag.lower() for tag in terms.scope.allowed_tags), left))
    return options, excluded


def _templates(request: PlanRequest, inputs: Inputs, config: PlanConfig) -> tuple[list[tuple[Template, ModelPick]], list[str]]:
    notes: list[str] = []
    chosen: list[tuple[Template, ModelPick]] = []
    wanted = request.trend.tags if request.trend is not None else None
    for template in inputs.templates:
        if template.retired or (TEMPLATE_KIND, template.template_id) in inputs.disabled:
            continue
        if wanted is not None and not wanted & {tag.lower() for tag in template.tags}:
            continue
        try:
            pick = pick_model(template, commercial=config.commercial, backend=config.backend,
                              rules=config.model_rules, licences=config.licences)
        except NoModel as exc:
            notes.append(f"template {template.template_id} left out: {exc}")
            continue
        chosen.append((template, pick))
    if wanted is not None and not chosen:
        notes.append(f"no template matches the trend's tags {sorted(wanted)}")
    return chosen, notes


def _seed(plan_id: str, arm_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{plan_id}/{arm_id}".encode()).digest()[:4], "big")


def swap_requested(job: PlannedJob, plan: Plan, *, config: PlanConfig, producer: str, event_id: str,
                   occurred_at: datetime, template_uri: str, source_image_uri: str) -> dict[str, Any]:
    """The swap.requested value of a planned job."""
    music = job.music
    return {
        "event_id": event_id, "occurred_at": occurred_at, "producer": producer, "job_id": job.job_id,
        "subject_id": job.subject.subject_id, "consent_version": job.subject.consent_version,
        "source_image_uri": source_image_uri, "source_image_sha256": job.subject.image_sha256,
        "template_id": job.template.template_id, "template_uri": template_uri, "template_sha256": job.template.sha256,
        "template_tags": list(job.template.tags), "swapper_model": job.model.model,
        "backend": config.backend, "priority": job.priority,
        "platform": config.platform, "commercial": config.commercial,
        "music_id": music.music_id if music else None, "music_uri": music.uri if music else None,
        "caption_text": job.caption, "caption_style": job.style.style_id, "deadline": job.deadline,
        "trend_id": job.trend_id, "plan_id": plan.plan_id, "arm_id": job.combination.arm_id,
    }  # fmt: skip
