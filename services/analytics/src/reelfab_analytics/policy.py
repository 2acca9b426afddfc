"""The policy as the planner receives it: one PolicyUpdated per arm space on the compacted
``reelfab.policy.updated.v1`` (key: the space's name), carrying *every* arm of the space — compaction
keeps only the newest record per key, so each record must be the whole space — with its Beta
posterior, pulls, mean and whether it is disabled. ``policy_version`` increases by one with each
publication of a space. The one exception: a space too large for one message (``max_message_bytes``)
goes out without its least-seen arms (``trimmed``), never without a disabled one. Pure: what to
publish from a snapshot of the tables."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from reelfab.contracts.arms import SEPARATOR, SUBJECT, SUBJECT_TEMPLATE, TEMPLATE
from reelfab.contracts.generated.records import ArmPosterior, PolicyUpdated

from .posteriors import ArmStats, Posterior, Prior
from .rules import FACE, TEMPLATE_KIND

# the spaces whose arms a flag on a subject or template reaches (their pairs included)
SPACES_OF_KIND: dict[str, tuple[str, ...]] = {FACE: (SUBJECT, SUBJECT_TEMPLATE), TEMPLATE_KIND: (TEMPLATE, SUBJECT_TEMPLATE)}


@dataclass(frozen=True)
class Disabled:
    """The subjects and templates disabled now (DISABLED flags)."""

    subjects: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()

    @classmethod
    def of(cls, flags: Collection[tuple[str, str]]) -> Disabled:
        """From (kind, target) pairs of DISABLED flags."""
        return cls(frozenset(t for k, t in flags if k == FACE), frozenset(t for k, t in flags if k == TEMPLATE_KIND))

    def arm(self, space: str, arm_id: str) -> bool:
        if space == SUBJECT:
            return arm_id in self.subjects
        if space == TEMPLATE:
            return arm_id in self.templates
        if space == SUBJECT_TEMPLATE:
            subject, _, template = arm_id.partition(SEPARATOR)
            return subject in self.subjects or template in self.templates
        return False

    def extra_arms(self, space: str) -> frozenset[str]:
        """Disabled targets the space must list even before any post of theirs (so the planner sees them)."""
        return self.subjects if space == SUBJECT else self.templates if space == TEMPLATE else frozenset()


@dataclass(frozen=True)
class ArmState:
    arm_id: str
    stats: ArmStats
    disabled: bool


@dataclass(frozen=True)
class SpaceSnapshot:
    space: str
    version: int  # the version this publication carries
    arms: tuple[ArmState, ...]


def space_arms(space: str, stats: Mapping[str, ArmStats], disabled: Disabled) -> tuple[ArmState, ...]:
    """Every arm of ``space``: those with posts, and disabled targets without any; sorted by arm id."""
    ids = set(stats) | disabled.extra_arms(space)
    return tuple(ArmState(a, stats.get(a, ArmStats()), disabled.arm(space, a)) for a in sorted(ids))


def trimmed(snapshot: SpaceSnapshot, keep: int) -> SpaceSnapshot:
    """The space cut to ``keep`` arms, for a record that would not fit in one message: every disabled
    arm (the planner must never choose one), then the arms with the most posts. An arm left out is
    sampled from the prior by the planner, like any arm it has no data for; the arms cut are those
    with the fewest posts, which tell it least (and a subject×template pair's draw is shrunk to
    almost nothing there anyway)."""
    ranked = sorted(snapshot.arms, key=lambda a: (not a.disabled, -a.stats.pulls, a.arm_id))
    kept = sorted(ranked[:max(keep, sum(1 for a in snapshot.arms if a.disabled))], key=lambda a: a.arm_id)
    return SpaceSnapshot(snapshot.space, snapshot.version, tuple(kept))


def policy_record(snapshot: SpaceSnapshot, prior: Prior, *, event_id: str, now: datetime,
                  producer: str) -> PolicyUpdated:
    arms = []
    for arm in snapshot.arms:
        posterior = Posterior.of(prior, arm.stats)
        arms.append(ArmPosterior(arm_id=arm.arm_id, alpha=posterior.alpha, beta=posterior.beta,
                                 pulls=posterior.pulls, mean=posterior.mean, disabled=arm.disabled))
    return PolicyUpdated(event_id=event_id, occurred_at=now, producer=producer, arm_space=snapshot.space,
                         policy_version=snapshot.version, computed_at=now, arms=arms)
