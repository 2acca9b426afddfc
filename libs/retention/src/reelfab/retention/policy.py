"""Retention by policy: which objects of the store may go, and why. Pure: it decides from plain
values (the store's listing, the jobs' terminal events, the clock, the policy) and does no I/O;
``reelfab.retention.adapters`` lists, scans and deletes.

Kinds of object, by key (the keys the services write):

- ``jobs/<job_id>/mezzanine.*``, ``jobs/<job_id>/track.*``, ``jobs/<job_id>/rendered.*`` (the swapper's
  unsigned render in fused mode): **intermediate**. They go once the job
  has finished (published, failed, or rendered while ``rendered_is_finished``), ``intermediate_grace``
  after the later of the job's last terminal event and the object's own modification. A job with no
  terminal event seen keeps them until they are ``orphan_age`` old.
- ``inputs/<job_id>/...``: **input**, the per-job copies of a job's source image, template and
  music. They go with the job's intermediates, and in any case once ``input_max_age`` old.
- ``jobs/<job_id>/final.*``: **final**. It goes once ``final_max_age`` old, whatever the job did.
- ``consent/...``: **consent**, the registry's sealed enrolled images. Never touched here (erasure is
  the registry's business).
- ``.part-*`` files anywhere else: **partial**, the leftovers of writes that crashed. They go once
  ``partial_max_age`` old (a write in progress keeps touching its file).
- anything else: **other**, never touched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from reelfab.identifiers import InvalidIdentifier, check_identifier

Kind = Literal["intermediate", "input", "final", "consent", "partial", "other"]
KINDS: tuple[Kind, ...] = ("intermediate", "input", "final", "consent", "partial", "other")
PROTECTED_PREFIXES: tuple[str, ...] = ("consent/",)

Terminal = Literal["rendered", "published", "failed"]

_INTERMEDIATE_STEMS = frozenset({"mezzanine", "track", "rendered"})
_FINAL_STEMS = frozenset({"final"})
PARTIAL_PREFIX = ".part-"


class ListedObject(Protocol):
    """What the policy reads of a listed object: ``reelfab.storage.ObjectInfo`` and ``StoreObject``
    both fit."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> datetime: ...


@dataclass(frozen=True)
class StoreObject:
    """An object of the store as the policy sees it, as a plain value (tests, ``RetentionPlan.freed``)."""

    key: str
    size: int
    mtime: datetime


@dataclass(frozen=True)
class RetentionPolicy:
    intermediate_grace: timedelta = timedelta(hours=6)
    orphan_age: timedelta = timedelta(days=7)
    input_max_age: timedelta = timedelta(days=7)
    final_max_age: timedelta = timedelta(days=30)
    partial_max_age: timedelta = timedelta(days=1)
    # until the publisher service exists, a rendered job is as finished as it will get
    rendered_is_finished: bool = True

    def __post_init__(self) -> None:
        for name in ("intermediate_grace", "orphan_age", "input_max_age", "final_max_age", "partial_max_age"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"retention {name} must not be negative")
        if self.orphan_age < self.intermediate_grace:
            raise ValueError("retention orphan_age must be at least the intermediate grace period")


@dataclass(frozen=True)
class TerminalEvent:
    """A job reached an end: rendered, published or failed, at ``at``."""

    job_id: str
    terminal: Terminal
    at: datetime


@dataclass
class JobState:
    job_id: str
    rendered_at: datetime | None = None
    published_at: datetime | None = None
    failed_at: datetime | None = None

    def finished(self, rendered_is_finished: bool) -> tuple[datetime, str] | None:
        """(when, how) of the job's last terminal event that counts, or None while it runs."""
        ends = [(self.published_at, "published"), (self.failed_at, "failed")]
        if rendered_is_finished:
            ends.append((self.rendered_at, "rendered"))
        seen = [(at, how) for at, how in ends if at is not None]
        return max(seen) if seen else None


def fold_terminal_events(events: Iterable[TerminalEvent]) -> dict[str, JobState]:
    """Each job's latest time per kind of terminal event (a redelivered event changes nothing)."""
    jobs: dict[str, JobState] = {}
    for ev in events:
        state = jobs.setdefault(ev.job_id, JobState(ev.job_id))
        attr = f"{ev.terminal}_at"
        current: datetime | None = getattr(state, attr)
        if current is None or ev.at > current:
            setattr(state, attr, ev.at)
    return jobs


@dataclass(frozen=True)
class Classified:
    kind: Kind
    job_id: str | None = None


def classify(key: str) -> Classified:
    """The kind of the object at ``key`` and the job it belongs to, if any."""
    if key.startswith(PROTECTED_PREFIXES):
        return Classified("consent")
    segments = key.split("/")
    if segments[-1].startswith(PARTIAL_PREFIX):
        return Classified("partial")
    if len(segments) < 3 or segments[0] not in ("jobs", "inputs"):
        return Classified("other")
    try:
        job_id = check_identifier(segments[1], "job_id")
    except InvalidIdentifier:
        return Classified("other")
    if segments[0] == "inputs":
        return Classified("input", job_id)
    if len(segments) != 3:
        return Classified("other")
    stem = segments[2].split(".", 1)[0]
    if stem in _INTERMEDIATE_STEMS:
        return Classified("intermediate", job_id)
    if stem in _FINAL_STEMS:
        return Classified("final", job_id)
    return Classified("other")


@dataclass(frozen=True)
class Deletion:
    key: str
    kind: Kind
    size: int
    mtime: datetime
    job_id: str | None
    reason: str


@dataclass(frozen=True)
class KindUsage:
    objects: int = 0
    bytes: int = 0


@dataclass
class Usage:
    by_kind: dict[Kind, KindUsage] = field(default_factory=lambda: {k: KindUsage() for k in KINDS})

    @property
    def total(self) -> KindUsage:
        return KindUsage(sum(u.objects for u in self.by_kind.values()), sum(u.bytes for u in self.by_kind.values()))

    def as_dict(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {k: {"objects": u.objects, "bytes": u.bytes} for k, u in self.by_kind.items()}
        out["total"] = {"objects": self.total.objects, "bytes": self.total.bytes}
        return out


def measure(objects: Iterable[ListedObject]) -> Usage:
    usage = Usage()
    for obj in objects:
        kind = classify(obj.key).kind
        u = usage.by_kind[kind]
        usage.by_kind[kind] = KindUsage(u.objects + 1, u.bytes + obj.size)
    return usage


@dataclass
class RetentionPlan:
    deletions: list[Deletion]
    usage: Usage  # of the store as listed, before anything goes

    @property
    def freed(self) -> Usage:
        return measure(StoreObject(d.key, d.size, d.mtime) for d in self.deletions)

    @property
    def remaining(self) -> Usage:
        freed = self.freed.by_kind
        return Usage({k: KindUsage(u.objects - freed[k].objects, u.bytes - freed[k].bytes)
                      for k, u in self.usage.by_kind.items()})


def plan_retention(
    objects: Iterable[ListedObject],
    jobs: Mapping[str, JobState],
    now: datetime,
    policy: RetentionPolicy,
) -> RetentionPlan:
    """What may go from ``objects`` at ``now``, one reason per object; everything else stays."""
    listed = list(objects)
    deletions: list[Deletion] = []
    for obj in listed:
        c = classify(obj.key)
        reason = _reason_to_delete(c, obj, jobs, now, policy)
        if reason is not None:
            deletions.append(Deletion(obj.key, c.kind, obj.size, obj.mtime, c.job_id, reason))
    return RetentionPlan(deletions, measure(listed))


def _reason_to_delete(
    c: Classified, obj: ListedObject, jobs: Mapping[str, JobState], now: datetime, policy: RetentionPolicy
) -> str | None:
    age = now - obj.mtime
    if c.kind in ("consent", "other"):
        return None
    if c.kind == "partial":
        return f"unfinished write, {_span(age)} old (max {_span(policy.partial_max_age)})" if age >= policy.partial_max_age else None
    if c.kind == "final":
        return f"final, {_span(age)} old (max {_span(policy.final_max_age)})" if age >= policy.final_max_age else None
    if c.kind == "input" and age >= policy.input_max_age:
        return f"input, {_span(age)} old (max {_span(policy.input_max_age)})"
    # intermediate, or an input younger than its maximum age: goes with the job
    state = jobs.get(c.job_id or "")
    finished = state.finished(policy.rendered_is_finished) if state else None
    if finished is not None:
        at, how = finished
        since = now - max(at, obj.mtime)
        if since >= policy.intermediate_grace:
            return f"job {how} {_span(now - at)} ago (grace {_span(policy.intermediate_grace)})"
        return None
    if c.kind == "intermediate" and age >= policy.orphan_age:
        return f"no end seen for the job; {_span(age)} old (orphan age {_span(policy.orphan_age)})"
    return None


def _span(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s < 0:
        return f"-{_span(-d)}"
    if s >= 2 * 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"
