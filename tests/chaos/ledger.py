"""Counting from the topics, the only ground truth a chaos run has: what was submitted on
swap.requested, and what came out on render.completed, job.failed and the .dlq topics.

- lost: a submitted job with no terminal event (render.completed, job.failed, or a dead letter);
- duplicated: a job with render.completed events carrying different final files, or more than one
  terminal outcome (completed and failed, or failed for two different reasons);
- announced after revocation: a render.completed whose occurred_at is after the registry's
  revocation (the REVOKED event on the consent topic) of that job's subject."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reelfab.bus.message import RawMessage
from reelfab.bus.policy import H_ATTEMPTS, H_ERROR_MESSAGE, H_EVENT_ID

REQUESTED = "reelfab.swap.requested.v1"
SWAPPED = "reelfab.swap.completed.v1"
RENDERED = "reelfab.render.completed.v1"
FAILED = "reelfab.job.failed.v1"
CONSENT = "reelfab.consent.changed.v1"
DLQS = (REQUESTED + ".dlq", SWAPPED + ".dlq")


@dataclass(frozen=True)
class Submitted:
    job_id: str  # the message key as sent (a hostile id in scenario 8)
    event_id: str
    subject_id: str
    good: bool = True  # a valid job that must not be dead-lettered
    label: str = ""  # what it is, for the poison and hostile sets
    topic: str = REQUESTED


@dataclass
class DeadLetter:
    topic: str
    key: str
    attempts: int
    error: str


@dataclass
class JobOutcome:
    job: Submitted
    swapped: list[dict[str, Any]] = field(default_factory=list)
    rendered: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return bool(self.rendered or self.failed or self.dead)

    def outcomes(self) -> set[tuple[str, str]]:
        found = {("completed", r["final_sha256"]) for r in self.rendered}
        found |= {("failed", f["reason_code"]) for f in self.failed}
        if self.dead and not any(f["reason_code"].startswith("dead_lettered") for f in self.failed):
            found |= {("dead_lettered", d.topic) for d in self.dead}
        return found

    @property
    def duplicated(self) -> bool:
        return len(self.outcomes()) > 1

    @property
    def failure_reasons(self) -> list[str]:
        """Reasons of decided failures; a dead letter's own job.failed (dead_lettered.*) is counted as dead."""
        return sorted({f["reason_code"] for f in self.failed if not f["reason_code"].startswith("dead_lettered")})


@dataclass
class Row:
    scenario: str
    jobs: int
    completed: int
    failed: int
    reasons: dict[str, int]
    dead: int
    lost: int
    duplicated: int
    after_revocation: int
    seconds: float = 0.0
    notes: str = ""

    HEADER = ("scenario", "jobs", "completed", "failed (reason)", "dead-lettered", "lost", "duplicated",
              "announced after revocation", "s")

    def cells(self) -> tuple[str, ...]:
        reasons = ", ".join(f"{k}×{v}" for k, v in sorted(self.reasons.items()))
        failed = f"{self.failed} ({reasons})" if reasons else str(self.failed)
        return (self.scenario, str(self.jobs), str(self.completed), failed, str(self.dead), str(self.lost),
                str(self.duplicated), str(self.after_revocation), f"{self.seconds:.0f}")

    def line(self) -> str:
        return " | ".join(self.cells()) + (f"   [{self.notes}]" if self.notes else "")


def _header(raw: RawMessage, name: str) -> str | None:
    value = raw.header(name)
    return value.decode(errors="replace") if value is not None else None


class Ledger:
    """The jobs a scenario submitted and what the topics say became of them."""

    def __init__(self, bus: Any, since: datetime) -> None:
        self.bus = bus
        self.codec = bus.codec
        self.since = since
        self.jobs: list[Submitted] = []

    def add(self, job: Submitted) -> Submitted:
        self.jobs.append(job)
        return job

    async def _scan(self, topic: str) -> list[RawMessage]:
        return await self.bus.scan(topic, self.since)

    async def outcomes(self) -> dict[str, JobOutcome]:
        by_event = {j.event_id: j for j in self.jobs}
        by_key: dict[str, JobOutcome] = {}
        result: dict[str, JobOutcome] = {}
        for j in self.jobs:
            result[j.event_id] = JobOutcome(j)
            by_key.setdefault(j.job_id, result[j.event_id])
        scans = await asyncio.gather(*(self._scan(t) for t in (SWAPPED, RENDERED, FAILED, *DLQS)))
        for topic, messages in zip((SWAPPED, RENDERED, FAILED, *DLQS), scans, strict=True):
            for m in messages:
                key = m.key.decode(errors="replace") if m.key is not None else ""
                if topic in DLQS:
                    event_id = _header(m, H_EVENT_ID)
                    target = result.get(event_id) if event_id in by_event else by_key.get(key)
                    if target is not None:
                        target.dead.append(DeadLetter(topic, key, int(_header(m, H_ATTEMPTS) or 0),
                                                      _header(m, H_ERROR_MESSAGE) or ""))
                    continue
                target = by_key.get(key)
                if target is None or _header(m, H_EVENT_ID) in by_event:
                    continue  # not ours, or a message the scenario itself injected (scenario 8's swap.completed)
                value = self.codec.decode(m.value).value
                value["_published_ms"] = m.timestamp_ms  # when the record reached Kafka (the outbox relay)
                {SWAPPED: target.swapped, RENDERED: target.rendered, FAILED: target.failed}[topic].append(value)
        return result

    async def revocations(self) -> dict[str, datetime]:
        """Subject -> when the registry revoked its consent (the REVOKED event's occurred_at)."""
        found: dict[str, datetime] = {}
        for m in await self._scan(CONSENT):
            value = self.codec.decode(m.value).value
            if str(value["change"]).upper() == "REVOKED":
                at = value["occurred_at"]
                found[value["subject_id"]] = min(at, found.get(value["subject_id"], at))
        return found

    async def settle(self, timeout: float, interval: float = 1.0) -> dict[str, JobOutcome]:
        """Wait until every submitted job has a terminal event, or the timeout; then one more look
        after a short pause, so a late duplicate is counted too."""
        deadline = time.monotonic() + timeout
        while True:
            seen = await self.outcomes()
            if all(o.terminal for o in seen.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(interval)
        await asyncio.sleep(1.5)
        return await self.outcomes()

    async def row(self, scenario: str, seen: dict[str, JobOutcome], seconds: float, notes: str = "") -> Row:
        revoked = await self.revocations()
        reasons: Counter[str] = Counter()
        after = published_after = 0
        for o in seen.values():
            for code in o.failure_reasons:
                reasons[code] += 1
            at = revoked.get(o.job.subject_id)
            if at is not None:
                after += sum(1 for r in o.rendered if r["occurred_at"] > at)
                published_after += sum(1 for r in o.rendered if (r["_published_ms"] or 0) > at.timestamp() * 1000)
        return Row(
            scenario=scenario,
            jobs=len(seen),
            completed=sum(1 for o in seen.values() if o.rendered),
            failed=sum(1 for o in seen.values() if o.failure_reasons),
            reasons=dict(reasons),
            dead=sum(1 for o in seen.values() if o.dead),
            lost=sum(1 for o in seen.values() if not o.terminal),
            duplicated=sum(1 for o in seen.values() if o.duplicated),
            after_revocation=after,
            seconds=seconds,
            # information, not asserted: a video whose consent was verified just before the revocation
            # may still reach Kafka just after it (the outbox relay's delay)
            notes="; ".join(n for n in (notes, f"published to Kafka after revocation: {published_after}"
                                        if revoked and published_after else "") if n),
        )


def describe(seen: dict[str, JobOutcome]) -> str:
    """One line per job, for assertion messages."""
    lines = []
    for o in seen.values():
        what = (f"rendered×{len(o.rendered)} failed={o.failure_reasons} "
                f"dead={[(d.topic.split('.')[1], d.attempts, d.error[:120]) for d in o.dead]}")
        lines.append(f"  {o.job.job_id!r} ({o.job.label or 'job'}): swapped×{len(o.swapped)} {what}")
    return "\n".join(lines)
