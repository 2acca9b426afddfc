"""The planner's bandit arms, as the planner writes them on a job and analytics reads them back.

A job is one *combination* (subject × template × music × caption style). Its ``arm_id`` names the
combination, and the combination belongs to one arm in each arm space: the subject, the template, the
music bed, the caption style and the subject×template pair. Analytics keeps a posterior per arm of
every space and publishes each space on ``reelfab.policy.updated.v1`` (keyed by the space's name); the
planner samples each arm once per plan and adds the samples up per candidate.

``arm_id`` is an identifier (reelfab.identifiers: ``A-Z a-z 0-9 _ - . ~``), so its parts are joined by
``~`` and a missing music bed is ``-``; ids containing ``~`` cannot be part of a combination (the
planner's catalogue refuses them)."""

from __future__ import annotations

from dataclasses import dataclass

from reelfab.errors import PermanentError
from reelfab.identifiers import check_identifier

SUBJECT, TEMPLATE, MUSIC, STYLE, SUBJECT_TEMPLATE = "subject", "template", "music", "style", "subject_template"
ARM_SPACES: tuple[str, ...] = (SUBJECT, TEMPLATE, MUSIC, STYLE, SUBJECT_TEMPLATE)
SEPARATOR = "~"
NO_MUSIC = "-"


class BadArm(PermanentError):
    """An arm id that does not name a combination."""


@dataclass(frozen=True)
class Combination:
    subject: str
    template: str
    music: str | None
    style: str

    @property
    def arm_id(self) -> str:
        parts = (self.subject, self.template, self.music or NO_MUSIC, self.style)
        for part in parts:
            if SEPARATOR in part:
                raise BadArm(f"{part!r} contains {SEPARATOR!r}, which separates the parts of an arm id")
        return check_identifier(SEPARATOR.join(parts), "arm_id")

    def arms(self) -> dict[str, str]:
        """The arm of each space this combination belongs to."""
        return {
            SUBJECT: self.subject,
            TEMPLATE: self.template,
            MUSIC: self.music or NO_MUSIC,
            STYLE: self.style,
            SUBJECT_TEMPLATE: pair_arm(self.subject, self.template),
        }


def pair_arm(subject: str, template: str) -> str:
    return f"{subject}{SEPARATOR}{template}"


def parse_arm_id(arm_id: str) -> Combination:
    """The combination an ``arm_id`` names; BadArm naming what is wrong otherwise."""
    parts = arm_id.split(SEPARATOR)
    if len(parts) != 4 or not all(parts):
        raise BadArm(f"arm_id {arm_id!r:.140} is not subject~template~music~style")
    subject, template, music, style = parts
    return Combination(subject, template, None if music == NO_MUSIC else music, style)
