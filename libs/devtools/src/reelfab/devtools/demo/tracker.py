"""What the demo knows of its run, from the bus alone: every job this run's planner (or the demo) asked
for, followed through swap, render, review and post; consent changes; policy updates; engagement. It
subscribes in a consumer group of its own from the moment it starts, so events of earlier runs are not
in it; engagement read back for posts of earlier runs names jobs it does not know and is left out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reelfab.bus import Event
from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    ENGAGEMENT_OBSERVED,
    JOB_FAILED,
    POLICY_UPDATED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SWAP_COMPLETED,
    SWAP_EXPEDITED,
    SWAP_REQUESTED,
    TREND_DETECTED,
)

STAGES = ("queued", "swapping", "rendering", "in review", "publishing", "published", "stopped")
TOPICS = (SWAP_REQUESTED, SWAP_EXPEDITED, SWAP_COMPLETED, RENDER_COMPLETED, PUBLISH_COMPLETED, JOB_FAILED,
          ENGAGEMENT_OBSERVED, CONSENT_CHANGED, POLICY_UPDATED, TREND_DETECTED)


@dataclass
class Job:
    job_id: str
    round: int | None
    requested: dict[str, Any]
    requested_at: datetime
    swapped: dict[str, Any] | None = None
    rendered: dict[str, Any] | None = None
    approved_at: datetime | None = None
    approved_by: str | None = None
    published: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    engagement: dict[str, Any] | None = None  # the latest reading
    engaged_at: datetime | None = None  # when the first reading was taken
    frames: tuple[int, int] | None = None  # (done, total) while swapping, from the swapper's progress

    @property
    def stage(self) -> str:
        if self.failed is not None:
            return "stopped"
        if self.published is not None:
            return "published"
        if self.approved_at is not None:
            return "publishing"
        if self.rendered is not None:
            return "in review"
        if self.swapped is not None:
            return "rendering"
        return "swapping" if self.frames is not None else "queued"

    @property
    def done(self) -> bool:
        return self.failed is not None or self.published is not None

    @property
    def subject(self) -> str:
        return str(self.requested["subject_id"])


@dataclass
class Note:
    at: datetime
    kind: str  # granted, revoked, denied, trend, round, policy, ...
    text: str
    subject_id: str | None = None


@dataclass
class Tracker:
    round: int | None = None  # jobs requested now belong to this round
    jobs: dict[str, Job] = field(default_factory=dict)
    consent: list[dict[str, Any]] = field(default_factory=list)  # ConsentChanged values seen
    policies: list[dict[str, Any]] = field(default_factory=list)
    trends: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    engagement_seen: int = 0
    started: float = field(default_factory=time.perf_counter)

    async def handle(self, event: Event[Any]) -> None:
        value = event.record.to_avro() if hasattr(event.record, "to_avro") else dict(event.record)
        self.take(event.topic, value)

    def take(self, topic: str, v: dict[str, Any]) -> None:
        if topic in (SWAP_REQUESTED, SWAP_EXPEDITED):
            if v["job_id"] not in self.jobs:
                self.jobs[v["job_id"]] = Job(v["job_id"], self.round, v, v["occurred_at"])
            return
        if topic == CONSENT_CHANGED:
            self.consent.append(v)
            return
        if topic == POLICY_UPDATED:
            self.policies.append(v)
            return
        if topic == TREND_DETECTED:
            self.trends.append(v)
            return
        job = self.jobs.get(v.get("job_id") or "")
        if job is None:
            return  # an earlier run's job (engagement read back for an old post, a late failure)
        if topic == SWAP_COMPLETED:
            job.swapped, job.frames = v, None
        elif topic == RENDER_COMPLETED:
            job.rendered = v
        elif topic == PUBLISH_COMPLETED:
            job.published = v
        elif topic == JOB_FAILED:
            job.failed = v
            job.frames = None
        elif topic == ENGAGEMENT_OBSERVED:
            job.engagement = v
            job.engaged_at = job.engaged_at or v["occurred_at"]
            self.engagement_seen += 1

    def note(self, at: datetime, kind: str, text: str, subject_id: str | None = None) -> None:
        self.notes.append(Note(at, kind, text, subject_id))

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STAGES, 0)
        for job in self.jobs.values():
            counts[job.stage] += 1
        return counts

    def of_round(self, round_: int) -> list[Job]:
        return [j for j in self.jobs.values() if j.round == round_]
