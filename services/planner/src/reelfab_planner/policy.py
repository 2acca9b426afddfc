"""The planner's copy of the bandit policy analytics publishes (reelfab.policy.updated.v1, one record per
arm space on a compacted topic), and Thompson sampling from it.

Each arm holds a Beta posterior over its reward (analytics documents why Beta). A plan draws one
sample per arm of every space, once, and a candidate's score is the sum of its arms' samples
(reelfab_planner.candidates): with no data every arm is Beta(1, 1) and the plan explores evenly. An arm
analytics has disabled is never chosen."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.contracts.arms import ARM_SPACES, SEPARATOR, SUBJECT_TEMPLATE

PRIOR = (1.0, 1.0)
INTERACTION_SHRINK = 5.0  # pulls at which a subject×template arm counts half


@dataclass(frozen=True)
class ArmPosterior:
    alpha: float
    beta: float
    pulls: int = 0
    disabled: bool = False

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class SpaceUpdate:
    """What applying one policy record did."""

    space: str
    applied: bool  # False: not a space the planner knows
    arms: int  # arms kept
    unknown: int  # arms the planner has no such thing for (ignored, counted)
    detail: str = ""


@dataclass
class Policy:
    """Per space: its version and its arms' posteriors."""

    spaces: dict[str, dict[str, ArmPosterior]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def apply(self, space: str, version: int, arms: Iterable[Mapping[str, Any]], known: set[str] | None) -> SpaceUpdate:
        """Take a space's posteriors: the whole space, replacing what was held. ``known`` is the set of
        arm ids the planner can plan (None: keep them all); others are ignored and counted.

        Records arrive in the topic's order per space (the key), which is the order analytics wrote
        them, and a redelivered record is caught by the processed-event mark; so a version that goes
        back means analytics' state was reset (a restored or new database), not a stale record — it is
        taken, and said so, rather than ignoring every update until the old number is passed again."""
        if space not in ARM_SPACES:
            return SpaceUpdate(space, False, 0, 0, f"unknown arm space {space!r} (known: {', '.join(ARM_SPACES)})")
        held = self.versions.get(space)
        detail = (f"version {version} after {held}: analytics' versions restarted; taken in topic order"
                  if held is not None and version <= held else "")
        kept: dict[str, ArmPosterior] = {}
        unknown = 0
        for arm in arms:
            arm_id = str(arm["arm_id"])
            if known is not None and arm_id not in known:
                unknown += 1
                continue
            alpha, beta = float(arm["alpha"]), float(arm["beta"])
            if not (np.isfinite(alpha) and np.isfinite(beta) and alpha > 0 and beta > 0):
                unknown += 1  # a posterior no Beta has: as good as unknown
                continue
            kept[arm_id] = ArmPosterior(alpha, beta, int(arm.get("pulls", 0)), bool(arm.get("disabled", False)))
        self.spaces[space] = kept
        self.versions[space] = version
        return SpaceUpdate(space, True, len(kept), unknown, detail)

    def arm(self, space: str, arm_id: str) -> ArmPosterior:
        return self.spaces.get(space, {}).get(arm_id) or ArmPosterior(*PRIOR)

    def sample(self, space: str, arm_ids: Sequence[str], rng: np.random.Generator) -> NDArray[np.float32]:
        """One Thompson draw per arm (-inf for a disabled arm), in the order of ``arm_ids``."""
        index = {arm_id: i for i, arm_id in enumerate(arm_ids)}
        return self._draw(space, (len(arm_ids),), lambda arm_id: index.get(arm_id), rng)

    def sample_pairs(self, subjects: Sequence[str], templates: Sequence[str], rng: np.random.Generator) -> NDArray[np.float32]:
        """One draw per subject×template arm, as a (subjects, templates) matrix."""
        s_index = {s: i for i, s in enumerate(subjects)}
        t_index = {t: j for j, t in enumerate(templates)}

        def where(arm_id: str) -> tuple[int, int] | None:
            subject, _, template = arm_id.partition(SEPARATOR)
            i, j = s_index.get(subject), t_index.get(template)
            return None if i is None or j is None else (i, j)

        draws = self._draw(SUBJECT_TEMPLATE, (len(subjects), len(templates)), where, rng, prior=False)
        return draws

    def _draw(self, space: str, shape: tuple[int, ...], where: Callable[[str], Any], rng: np.random.Generator,
              *, prior: bool = True) -> NDArray[np.float32]:
        # every arm from the prior, then the arms with data (few) redrawn from their posteriors: a
        # loop over what the policy holds, never over the candidates. Without ``prior`` (the
        # subject×template interaction) an arm contributes its draw's deviation from the prior mean,
        # shrunk by pulls / (pulls + INTERACTION_SHRINK): an unseen pair adds no noise to the sum (the
        # subject and template arms explore), a pair with data adds what it has shown
        draws: NDArray[np.float32] = (rng.beta(PRIOR[0], PRIOR[1], size=shape).astype(np.float32) if prior
                                      else np.zeros(shape, dtype=np.float32))
        held = [(at, p) for arm_id, p in self.spaces.get(space, {}).items() if (at := where(arm_id)) is not None]
        if not held:
            return draws
        positions = np.array([at for at, _ in held]).reshape(len(held), len(shape))
        index = tuple(positions.T)
        sampled = rng.beta(np.array([p.alpha for _, p in held]), np.array([p.beta for _, p in held]))
        if not prior:
            pulls = np.array([p.pulls for _, p in held], dtype=np.float64)
            sampled = (sampled - PRIOR[0] / (PRIOR[0] + PRIOR[1])) * pulls / (pulls + INTERACTION_SHRINK)
        draws[index] = sampled
        disabled = np.array([p.disabled for _, p in held])
        if disabled.any():
            draws[tuple(positions[disabled].T)] = -np.inf
        return draws
