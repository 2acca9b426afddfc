"""A post as analytics follows it: the job's lineage (which arms it belongs to) and its newest
engagement reading (its reward). Pure decisions, no I/O:

- **lineage**: publish.completed is the authority (the job the publisher posted, with the planner's
  ``arm_id``); an engagement reading that carries a lineage of its own names the arms of a post not
  yet known from publish.completed (the two topics are keyed differently, so either may come first),
  and publish.completed replaces it when it arrives. A post belongs to ONE job: the same job
  announcing it again is fine (idempotent; its lineage as announced last), but a publish.completed
  naming a post already published by another job is refused (``PostReused``, dead-lettered naming
  the post and both jobs) rather than moving the post's credit to the other job's arms. A
  publication's ``consent_version`` must be a version the consent registry can have issued (they
  start at 1), else ``BadPublication``. A reading of a post with no lineage at all is
  kept, unattributed, until publish.completed names the post: nothing is lost.
- **arms**: the combination's arm in each space (``reelfab.contracts.arms``) when the lineage has an
  ``arm_id``; otherwise only the spaces it names (subject, template, and their pair when both).
- **newest reading wins**: a reading older than the one the post holds (``observed_at``) is stored
  but changes nothing, so a late, older reading never overwrites a newer one; nor does a reading
  that carries no reward (reward.py) take away what an earlier one showed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from reelfab.contracts.arms import (
    SEPARATOR,
    SUBJECT,
    SUBJECT_TEMPLATE,
    TEMPLATE,
    Combination,
    pair_arm,
    parse_arm_id,
)
from reelfab.errors import PermanentError

from .posteriors import Contribution

PUBLISH = "publish"  # lineage from publish.completed
ENGAGEMENT = "engagement"  # lineage from an engagement reading (until publish.completed comes)
FIRST_CONSENT_VERSION = 1  # the consent registry numbers a subject's consent versions 1, 2, ...


class BadPublication(PermanentError):
    """A publish.completed no publisher can have sent; the message names the field."""


class PostReused(PermanentError):
    """A publish.completed names a post already published by another job; the message names the
    post and both jobs."""


def check_publication(*, job_id: str, post_id: str, consent_version: int) -> None:
    """BadPublication naming the field of a publish.completed that cannot be true."""
    if consent_version < FIRST_CONSENT_VERSION:
        raise BadPublication(f"publication of post {post_id} by job {job_id}: consent_version is {consent_version}; "
                             f"consent versions start at {FIRST_CONSENT_VERSION}")


@dataclass(frozen=True)
class Lineage:
    job_id: str | None
    subject_id: str | None
    template_id: str | None
    arm_id: str | None
    source: str  # PUBLISH or ENGAGEMENT

    @classmethod
    def named(cls, source: str, *, job_id: str | None, subject_id: str | None, template_id: str | None,
              arm_id: str | None) -> Lineage | None:
        """The lineage a record names, or None when it names no arm at all. A malformed ``arm_id``
        raises BadArm (a PermanentError naming it)."""
        if arm_id is not None:
            parse_arm_id(arm_id)
        if arm_id is None and subject_id is None and template_id is None:
            return None
        return cls(job_id, subject_id, template_id, arm_id, source)

    @property
    def combination(self) -> Combination | None:
        return parse_arm_id(self.arm_id) if self.arm_id is not None else None

    def arms(self) -> dict[str, str]:
        """The arm of each space the post belongs to."""
        combination = self.combination
        if combination is not None:
            return combination.arms()
        arms: dict[str, str] = {}
        if self.subject_id:
            arms[SUBJECT] = self.subject_id
        if self.template_id:
            arms[TEMPLATE] = self.template_id
        if self.subject_id and self.template_id and SEPARATOR not in self.subject_id + self.template_id:
            arms[SUBJECT_TEMPLATE] = pair_arm(self.subject_id, self.template_id)
        return arms

    @property
    def subject(self) -> str | None:
        """The subject of the post's job: the combination's, else the one named."""
        combination = self.combination
        return combination.subject if combination is not None else self.subject_id

    @property
    def template(self) -> str | None:
        combination = self.combination
        return combination.template if combination is not None else self.template_id

    def disagreement(self) -> str | None:
        """What the named subject or template says against the ``arm_id`` (the arm decides), if anything."""
        combination = self.combination
        if combination is None:
            return None
        wrong = [f"{name} {named!r} but arm_id says {armed!r}" for name, named, armed in
                 (("subject_id", self.subject_id, combination.subject),
                  ("template_id", self.template_id, combination.template)) if named and named != armed]
        return "; ".join(wrong) or None


@dataclass(frozen=True)
class Post:
    post_id: str
    lineage: Lineage | None = None
    platform: str | None = None
    published_at: datetime | None = None
    observed_at: datetime | None = None  # the instant of the newest reading with a reward
    reward: float | None = None  # the newest reading's reward (None: it carried none)
    trials: float = 0.0  # how many Bernoulli trials that reward counts as (posteriors.post_trials)

    @property
    def attributed(self) -> bool:
        return self.lineage is not None

    def contribution(self) -> Contribution | None:
        """What the post adds to the posteriors now: its newest reward to its arms, or nothing."""
        if self.lineage is None or self.reward is None or self.trials <= 0:
            return None
        arms = self.lineage.arms()
        return Contribution(arms, self.reward, self.trials) if arms else None

    def published(self, lineage: Lineage, platform: str, published_at: datetime) -> Post:
        """publish.completed names the post: its lineage replaces any the readings gave, or the one
        the same job announced before. PostReused when another job published the post already."""
        mine = self.lineage
        if mine is not None and mine.source == PUBLISH and mine.job_id != lineage.job_id:
            raise PostReused(f"post_id {self.post_id} is already published by job {mine.job_id}; "
                             f"job {lineage.job_id} cannot publish it too (a reused post id): refused, "
                             f"the post stays job {mine.job_id}'s")
        return replace(self, lineage=lineage, platform=platform, published_at=published_at)

    def is_newer(self, observed_at: datetime) -> bool:
        return self.observed_at is None or observed_at > self.observed_at

    def read(self, observed_at: datetime, reward: float | None, trials: float, lineage: Lineage | None,
             platform: str) -> Post:
        """An engagement reading: it names the lineage of a post without one, and when it carries a
        reward and is newer than the post's newest reading with one, its reward (counting as
        ``trials`` trials) becomes the post's. A reading without a reward (no views yet, no
        completion rate where only that counts) never takes away what an earlier one showed."""
        post = self
        if post.lineage is None and lineage is not None:
            post = replace(post, lineage=lineage)
        if post.platform is None:
            post = replace(post, platform=platform)
        if reward is not None and self.is_newer(observed_at):
            post = replace(post, observed_at=observed_at, reward=reward, trials=trials)
        return post


@dataclass(frozen=True)
class Observation:
    """One engagement reading of a post, as the observations table keeps it (every reading, newest or not)."""

    event_id: str
    post_id: str
    observed_at: datetime
    views: int
    likes: int
    comments: int
    shares: int
    avg_watch_time_s: float | None
    completion_rate: float | None
    reward: float | None
    trials: float
