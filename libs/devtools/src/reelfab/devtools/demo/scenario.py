"""The demo's script, run against the factory: enrol the cast with consent, stock the catalogue, then
round after round plan a batch, let it be swapped, rendered, reviewed (the demo approves as an
operator, audited as such) and posted, read engagement back and wait for the policy to move. Mid-run it
emits a trend (its jobs travel expedited) and revokes one person (nothing with that face is posted
afterwards); in the first round it submits a job naming a person with no consent (denied)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from reelfab.contracts.topics import SWAP_REQUESTED, TREND_DETECTED
from reelfab.settings import Settings

from .cast import TRENDING, Cast, Person
from .factory import Factory
from .tracker import Tracker

OPERATOR = "demo-operator"
DRYRUN_ACCOUNT = "demo-dryrun"
ROUND_TIMEOUT_S = 300.0


def plural(n: int, noun: str) -> str:
    """``1 template``, ``3 templates``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class DemoRefused(Exception):
    """The demo cannot do what was asked, or the factory did not do what it should (the message says
    which and why)."""


@dataclass
class Timeline:
    """What the script did and when (the report's consent timeline and the leaderboard per round)."""

    revoked: tuple[str, datetime] | None = None  # (subject, when the registry answered)
    denied_job: str | None = None
    trend_id: str | None = None
    trend_at: datetime | None = None
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    approvals: dict[str, datetime] = field(default_factory=dict)


Say = Callable[[str], None]


# ------------------------------------------------------------------------------------------ set-up


async def enrol(api: httpx.AsyncClient, person: Person, tags: list[str]) -> None:
    """The person's subject and face; consent too unless they never gave it (409s: already there)."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("/subjects", {"json": {"subject_id": person.subject_id, "display_name": person.display_name}}),
        (f"/subjects/{person.subject_id}/images",
         {"files": {"image": (person.image.name, person.image.read_bytes(), "image/png")}}),
    ]
    if person.consent_document is not None:
        steps.append((f"/subjects/{person.subject_id}/consents", {
            "files": {"document": (person.consent_document.name, person.consent_document.read_bytes(), "text/plain")},
            "data": {"platforms": "tiktok", "allowed_tags": ",".join(tags), "commercial_use": "false"}}))
    for path, body in steps:
        r = await api.post(path, **body)
        if r.status_code == 409 and path.endswith("/consents"):
            # consent still in force from an earlier run: renewed as a new version for this run's tags, so
            # every run's timeline starts with a grant and the scope covers this run's templates
            r = await api.patch(path, json={"platforms": ["tiktok"], "allowed_tags": tags, "commercial_use": False,
                                            "reason": "renewed for a new demo run"})
        if r.status_code not in (200, 201, 409):
            raise DemoRefused(f"the consent registry refused {path} for {person.subject_id}: {r.status_code} {r.text}")


async def stock_catalogue(factory: Factory, cast: Cast, settings: Settings, say: Say) -> None:
    from reelfab.storage import open_store
    from reelfab_planner.catalogue import TemplateLimits
    from reelfab_planner.cli import add_music_file, add_template_file
    from reelfab_planner.template_qc import qc_engine, template_limits

    planner: Any = factory.planner.extra("planner")
    store = open_store(settings.storage_root)
    base = template_limits(settings)
    limits = TemplateLimits(min_seconds=base.min_seconds, max_seconds=base.max_seconds,
                            min_short_side=base.min_short_side, min_face_share=base.min_face_share,
                            samples=base.samples)
    engine = await asyncio.to_thread(qc_engine, settings)
    for t in cast.templates:
        added = await add_template_file(planner.catalogue, store, t.path, list(t.tags), template_id=t.item_id,
                                        limits=limits, engine=engine,
                                        closeup_face_share=settings.planner_closeup_face_share,
                                        commercial=False, backend=settings.face_backend,
                                        rules_text=settings.planner_model_rules, now=datetime.now(UTC))
        say(f"template {t.item_id} passed QC: face in {added.template.face_share:.0%} of sampled frames, "
            f"{added.template.shot}, {added.template.duration_s:.1f} s")
    for m in cast.music:
        await add_music_file(planner.catalogue, store, m.path, list(m.tags), music_id=m.item_id,
                             licence="CC0-1.0 (generated by the demo)", commercial=False, now=datetime.now(UTC))
    say(f"catalogue: {plural(len(cast.templates), 'template')}, {plural(len(cast.music), 'music bed')}")


async def ensure_dryrun_account(factory: Factory) -> None:
    from reelfab_publisher.repository import AccountRow

    p: Any = factory.publisher.extra("publisher")
    if await p.repo.account(DRYRUN_ACCOUNT) is None:
        await p.repo.add_account(AccountRow(DRYRUN_ACCOUNT, "dryrun", "direct", None, None, None, None, None, None,
                                            False, None, False, False, None, None))


async def check_account(account: str, publish_to: str) -> None:
    """Before minutes of work: the account exists, is of the right kind and can post now."""
    from reelfab_publisher.accounts import account_problem
    from reelfab_publisher.cli import publisher_session

    async with publisher_session() as p:
        a = await p.repo.account(account)
        if a is None:
            raise DemoRefused(f"no account {account!r}: add it first with `reelfab accounts add {account} …`")
        if (a.platform == "dryrun") != (publish_to == "dryrun"):
            raise DemoRefused(f"account {account} is a {a.platform} account, not one for --publish-to {publish_to}")
        problem = account_problem(a, p.clock())
        if problem is not None:
            raise DemoRefused(f"account {account} cannot post now: {problem}")


def check_backend(settings: Settings, backend: str) -> None:
    """Before minutes of work: the backend can swap here (onnx: a model installed for every shot the
    planner's rules name; facefusion: an installed FaceFusion); DemoRefused saying what to do."""
    from reelfab.faces.errors import ModelError

    if backend == "facefusion":
        from reelfab.faces.facefusion import FaceFusionBackend

        try:
            FaceFusionBackend.from_settings(settings)
        except ModelError as exc:
            raise DemoRefused(f"--backend facefusion: {exc}") from None
    if backend == "onnx":
        from reelfab.faces.onnx.store import ModelStore, models_dir
        from reelfab_planner.model_rules import parse_rules

        store = ModelStore(models_dir(settings))
        for shot, models in parse_rules(settings.planner_model_rules).items():
            problems = []
            for model in models:
                try:
                    store.require([model], commercial_mode=settings.commercial_mode)
                    break
                except ModelError as exc:
                    problems.append(str(exc))
            else:
                raise DemoRefused(f"--backend onnx: no model installed for {shot} templates ({', '.join(models)}): "
                                  f"{problems[0] if problems else 'none named'}")


async def until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise DemoRefused(f"{what} did not happen within {timeout:.0f} s (the log file says what the services did)")
        await asyncio.sleep(step)


# ------------------------------------------------------------------------------------------ running


async def reviewer(factory: Factory, account: str, timeline: Timeline, stop: asyncio.Event) -> None:
    """The operator at the review queue: approves every waiting video for ``account`` with the most
    private level the account offers (audited as demo-operator)."""
    from reelfab_publisher.desk import Approval, ReviewError

    desk: Any = factory.publisher.extra("desk")
    while not stop.is_set():
        for item in await desk.waiting():
            choice = next((a for a in await desk.accounts() if a.name == account), None)
            if choice is None or not choice.privacy_level_options:
                raise DemoRefused(f"account {account} cannot post now: {choice.problem if choice else 'not found'}")
            options = choice.privacy_level_options
            privacy = "SELF_ONLY" if "SELF_ONLY" in options else options[0]
            try:
                await desk.approve(item.job_id, Approval(account, privacy), OPERATOR)
            except ReviewError:
                continue  # stopped meanwhile (a revocation): nothing to approve
            timeline.approvals[item.job_id] = datetime.now(UTC)
        try:
            await asyncio.wait_for(stop.wait(), 0.3)
        except TimeoutError:
            pass


async def plan_round(factory: Factory, tracker: Tracker, round_: int, batch: int, say: Say) -> int:
    from reelfab_planner.usecase import plan_now

    planner: Any = factory.planner.extra("planner")
    tracker.round = round_
    plan = await plan_now(planner, batch, "demo")
    picks = ", ".join(f"{j.subject.subject_id}×{j.template.template_id}" for j in plan.jobs)
    say(f"round {round_}: planned {plural(len(plan.jobs), 'job')} ({picks})")
    ids = {j.job_id for j in plan.jobs}
    await until(lambda: ids <= set(tracker.jobs), 60, f"round {round_}'s swap jobs reaching the bus")
    return len(plan.jobs)


async def emit_trend(bus: Any, tracker: Tracker, timeline: Timeline, round_: int, say: Say) -> None:
    trend_id = f"demo-trend-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    before = set(tracker.jobs)
    await bus.publish(TREND_DETECTED, {
        "event_id": str(uuid.uuid4()), "occurred_at": now, "producer": "demo", "trend_id": trend_id,
        "source": "demo", "title": f"#{TRENDING} challenge", "tags": [TRENDING], "urgency": 0.9,
        "deadline": now + timedelta(hours=1), "platform": "tiktok", "region": None, "max_jobs": 2,
    })
    timeline.trend_id, timeline.trend_at = trend_id, now
    tracker.round = round_
    await until(lambda: any(j.requested.get("trend_id") == trend_id for j in tracker.jobs.values()), 60,
                f"the planner's jobs for trend {trend_id}")
    jobs = [j for i, j in tracker.jobs.items() if i not in before and j.requested.get("trend_id") == trend_id]
    say(f"trend {trend_id} (#{TRENDING}, urgency 0.9): {plural(len(jobs), 'expedited job')} at priority "
        f"{max(j.requested.get('priority') or 0 for j in jobs)} ({', '.join(j.subject for j in jobs)})")


async def deny_stranger(bus: Any, factory: Factory, cast: Cast, tracker: Tracker, timeline: Timeline,
                        settings: Settings, say: Say) -> None:
    """A job naming the person who never consented, submitted by hand: the swapper must refuse it."""
    from reelfab.consent.images import image_ref
    from reelfab.storage import open_store, sha256_file

    planner: Any = factory.planner.extra("planner")
    template = (await planner.catalogue.templates())[0]
    face_sha = await asyncio.to_thread(sha256_file, cast.stranger.image)
    job_id = f"demo-unconsented-{uuid.uuid4().hex[:6]}"
    store = open_store(settings.storage_root)
    assert store is not None
    await bus.publish(SWAP_REQUESTED, {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "demo", "job_id": job_id,
        "subject_id": cast.stranger.subject_id, "consent_version": 1,
        "source_image_uri": image_ref(cast.stranger.subject_id, face_sha), "source_image_sha256": face_sha,
        "template_id": template.template_id, "template_uri": template.uri, "template_sha256": template.sha256,
        "template_tags": list(template.tags), "swapper_model": "classical", "platform": "tiktok",
        "commercial": False, "caption_text": "This should never be made",
    })
    timeline.denied_job = job_id
    await until(lambda: job_id in tracker.jobs and tracker.jobs[job_id].failed is not None, 60,
                f"the refusal of {job_id}")
    failed = tracker.jobs[job_id].failed or {}
    say(f"a job naming {cast.stranger.display_name} (no consent) was denied at {failed.get('stage')}: "
        f"{failed.get('reason_code')}")


async def revoke(factory: Factory, person: Person, timeline: Timeline, say: Say, *, in_flight: bool = True) -> None:
    async with httpx.AsyncClient(base_url=factory.registry.url, timeout=60,
                                 headers={"Authorization": f"Bearer {factory.admin_token}"}) as api:
        r = await api.post(f"/subjects/{person.subject_id}/revoke", json={"reason": "demo: the person changed their mind"})
        if r.status_code != 200:
            raise DemoRefused(f"the registry refused the revocation of {person.subject_id}: {r.status_code} {r.text}")
    timeline.revoked = (person.subject_id, datetime.now(UTC))
    if in_flight:
        say(f"{person.display_name} revoked consent: work in flight with that face stops, nothing more is posted")
    else:
        say(f"{person.display_name} revoked consent (none of their work was in flight): nothing with that face "
            "is made or posted from now on, and what was posted is taken down")


def has_work_in_flight(tracker: Tracker, round_: int, person: Person) -> bool:
    return any(j.subject == person.subject_id and not j.done for j in tracker.of_round(round_))


def pick_revoked(cast: Cast, tracker: Tracker, round_: int) -> Person:
    """The person to revoke mid-round: the least engaging one with work of this round in flight (so the
    revocation visibly stops it), but never the only person with work in the run (the demo would have
    nothing left to show); else the least engaging such person."""
    ranked = sorted(cast.people, key=lambda p: p.rate or 0.0)
    working = {j.subject for j in tracker.jobs.values() if j.failed is None and j.subject in {p.subject_id for p in ranked}}

    def leaves_others(person: Person) -> bool:
        return bool(working - {person.subject_id})

    in_flight = {j.subject for j in tracker.of_round(round_) if not j.done}
    candidates = [p for p in ranked if leaves_others(p)] or ranked
    return next((p for p in candidates if p.subject_id in in_flight), candidates[0])


async def leaderboard(factory: Factory, cast: Cast, round_: int) -> dict[str, Any]:
    from reelfab_analytics.cli import leaderboard as board
    from reelfab_analytics.posteriors import Prior

    analytics: Any = factory.analytics.extra("analytics")
    data = board(await analytics.repo.standings(), Prior(analytics.prior.alpha, analytics.prior.beta), top=50)
    names = {p.subject_id: p.display_name for p in cast.people}
    ours = {"subject": set(names), "template": {t.item_id for t in cast.templates}}
    arms = []
    for space in data["spaces"]:
        if space["space"] not in ours:
            continue
        for row in space["arms"]:
            if row["arm_id"] not in ours[space["space"]]:
                continue  # engagement of an earlier run's posts, still read back: not this run's arms
            label = names.get(row["arm_id"], row["arm_id"])
            arms.append({"arm_id": row["arm_id"], "space": space["space"], "label": label, "mean": row["mean"],
                         "low": row["ci95_low"], "high": row["ci95_high"], "posts": row["pulls"]})
    return {"round": round_, "at": datetime.now(UTC).isoformat(), "arms": arms}


async def settle_round(factory: Factory, tracker: Tracker, round_: int, settings: Settings, say: Say) -> None:
    """Every job of the round posted or stopped, every post read back once, the policy moved after it."""
    jobs = tracker.of_round(round_)
    await until(lambda: all(j.done for j in jobs), ROUND_TIMEOUT_S, f"round {round_}'s jobs finishing")
    posted = [j for j in jobs if j.published is not None]
    # dry-run posts are read back from the simulator within seconds; TikTok gives engagement only for
    # public posts, hours later: a round of real posts does not wait for it
    simulated = [j for j in posted if (j.published or {}).get("dry_run")]
    stopped = [j for j in jobs if j.failed is not None]
    if not simulated:
        say(f"round {round_}: {len(posted)} posted, {len(stopped)} stopped (no simulated engagement to wait for)")
        return
    await until(lambda: all(j.engaged_at is not None for j in simulated), 120, f"round {round_}'s first engagement")
    last = max(j.engaged_at for j in simulated if j.engaged_at is not None)
    # a policy analytics computed after the round's last first reading (a later reading of a post need
    # not move the posteriors, so "the next update" may never come)
    await until(lambda: any(p["computed_at"] >= last for p in tracker.policies), 60, "analytics' policy update",
                step=0.1)
    await asyncio.sleep(2 * settings.analytics_policy_flush_s)  # the planner applies what analytics published
    say(f"round {round_}: {len(posted)} posted, {len(stopped)} stopped; engagement read back, policy updated")
