"""The planner's handlers, broker-free: the in-memory bus and unit of work, the real consent view
(signed leases), a catalogue in memory and the in-memory ledger. A trend plans expedited jobs; stage
events move the ledger; a policy changes the next plan; a flag disables a subject at once; bad input
is refused with its reason. The same paths on Kafka and PostgreSQL: tests/integration/test_planner_flow.py."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reelfab.consent.images import parse_image_ref
from reelfab.errors import PermanentError
from reelfab_planner import handlers
from reelfab_planner import main as planner_main
from reelfab_planner import metrics as planner_metrics
from reelfab_planner.bootstrap import Planner, bootstrap
from reelfab_planner.catalogue import MusicBed, Template
from reelfab_planner.usecase import plan_now
from tests.conftest import make_settings
from tests.integration.media_handlers_support import context, event, lease, view
from tests.unit.services.planner_samples import arms, config, music, style, template

SWAP_REQUESTED, SWAP_EXPEDITED = "reelfab.swap.requested.v1", "reelfab.swap.expedited.v1"


@dataclass
class Catalogue:
    items: list[Template] = field(default_factory=list)
    beds: list[MusicBed] = field(default_factory=list)

    async def templates(self, *, include_retired: bool = False) -> list[Template]:
        return [t for t in self.items if include_retired or not t.retired]

    async def music(self) -> list[MusicBed]:
        return list(self.beds)


def make_planner(*subjects: str, templates: list[Template] | None = None) -> Planner:
    ctx = context(planner_main, None, "planner", make_settings())
    consent = view("planner")
    for subject in subjects:
        consent.apply(lease(subject))  # tiktok, tags ("dance",), not commercial, daily cap 10
    catalogue = Catalogue(templates if templates is not None else [template("t1", "dance"), template("t2", "dance")],
                          [music("m1")])
    return bootstrap(ctx, view=consent, catalogue=catalogue, styles=[style("plain"), style("bold")], config=config())


def published(planner: Planner, topic: str) -> list[dict[str, Any]]:
    return [v if isinstance(v, dict) else v.to_avro() for v in planner.uow.on(topic)]  # type: ignore[attr-defined]


def trend(tags: list[str], **kw: Any) -> Any:
    values = {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "detector", "trend_id": "tr-1",
              "source": "test", "title": "a dance", "tags": tags, "urgency": 0.9,
              "deadline": datetime.now(UTC) + timedelta(hours=2), "max_jobs": 3}
    values.update(kw)
    return event("TrendDetected", "reelfab.trend.detected.v1", values)


async def test_a_trend_plans_expedited_jobs_once() -> None:
    planner = make_planner("vera", "ada")
    handle = handlers.on_trend(planner)
    ev = trend(["Dance", "viral"])
    await handle(ev)
    await handle(ev)  # redelivered: nothing new
    jobs = published(planner, SWAP_EXPEDITED)
    assert len(jobs) == 3 and published(planner, SWAP_REQUESTED) == []
    for job in jobs:
        assert job["priority"] == 10 and job["trend_id"] == "tr-1" and job["deadline"] == ev.record.deadline
        assert parse_image_ref(job["source_image_uri"]) == (job["subject_id"], job["source_image_sha256"])
        assert job["arm_id"].startswith(f"{job['subject_id']}~{job['template_id']}~")
    rows = await planner.store.jobs()
    assert {r.job_id for r in rows} == {j["job_id"] for j in jobs}
    assert all(r.status == "requested" and r.origin == "trend" and r.trend_id == "tr-1" for r in rows)


async def test_a_planner_told_its_subjects_plans_only_them_on_a_trend_too() -> None:
    planner = make_planner("vera", "ada", "bo")
    planner.config = replace(planner.config, subjects=frozenset({"ada", "zed"}))  # zed: no consent, never planned
    await handlers.on_trend(planner)(trend(["dance"], max_jobs=3))
    jobs = published(planner, SWAP_EXPEDITED)
    assert jobs and {j["subject_id"] for j in jobs} == {"ada"}


async def test_a_trend_asks_for_its_max_jobs_and_a_plan_beyond_the_batch_limit_is_refused() -> None:
    from reelfab_planner.limits import MAX_BATCH
    from reelfab_planner.usecase import trend_request

    planner = make_planner("vera")
    assert trend_request(planner, trend(["dance"], max_jobs=3).record).count == 3
    assert trend_request(planner, trend(["dance"], max_jobs=None).record).count == planner.config.trend_max_jobs
    assert trend_request(planner, trend(["dance"], max_jobs=10**6).record).count == planner.config.trend_max_jobs
    with pytest.raises(PermanentError, match="count must be 1 to 100,000"):
        await plan_now(planner, MAX_BATCH + 1, "cli")
    assert published(planner, SWAP_REQUESTED) == []


async def test_a_trend_nothing_matches_plans_nothing_and_counts_it() -> None:
    planner = make_planner("vera")
    before = planner_metrics.TRENDS_UNMATCHED.labels("no_template")._value.get()
    await handlers.on_trend(planner)(trend(["knitting"]))
    assert published(planner, SWAP_EXPEDITED) == []
    assert planner_metrics.TRENDS_UNMATCHED.labels("no_template")._value.get() == before + 1


@pytest.mark.parametrize(("field_name", "value", "says"), [("urgency", math.nan, "urgency"), ("urgency", 3.0, "urgency"),
                                                          ("max_jobs", 0, "max_jobs"),
                                                          ("tags", [f"tag{i}" for i in range(65)], "65 tags")])
async def test_a_trend_that_cannot_be_planned_is_refused_with_its_reason(field_name: str, value: Any, says: str) -> None:
    planner = make_planner("vera")
    with pytest.raises(PermanentError, match=says):
        await handlers.on_trend(planner)(trend(["dance"], **{field_name: value}) if field_name != "tags" else trend(value))
    assert published(planner, SWAP_EXPEDITED) == []


async def test_the_ledger_follows_a_job_through_every_stage() -> None:
    planner = make_planner("vera")
    plan = await plan_now(planner, 1, "cli")
    job = published(planner, SWAP_REQUESTED)[0]
    assert plan.jobs[0].job_id == job["job_id"]
    common = {"occurred_at": datetime.now(UTC), "producer": "x", "job_id": job["job_id"], "subject_id": "vera",
              "consent_version": 1}
    swapped = event("SwapCompleted", "reelfab.swap.completed.v1", {**common, "event_id": str(uuid.uuid4()),
        "mezzanine_uri": "file:///m.mp4", "mezzanine_sha256": "a" * 64, "face_track_uri": "file:///t.json",
        "face_track_sha256": "b" * 64, "backend": "classical", "swapper_model": "classical", "model_license": "x",
        "commercial_use_allowed": False, "frames": 10, "fps": 25.0, "duration_s": 0.4, "template_id": "t1",
        "source_image_sha256": "d" * 64, "platform": "tiktok"})  # fmt: skip
    rendered = event("RenderCompleted", "reelfab.render.completed.v1", {**common, "event_id": str(uuid.uuid4()),
        "final_uri": "file:///f.mp4", "final_sha256": "c" * 64, "spec_check": {"passed": True, "width": 1080, "height": 1920,
        "video_codec": "h264", "video_profile": "High", "pix_fmt": "yuv420p", "fps": 25.0, "audio_codec": "aac", "sample_rate": 44100,
        "duration_s": 0.4, "problems": []}, "c2pa_manifest_label": "urn:c2pa:x", "title": "t", "hashtags": [],
        "platform": "tiktok", "is_aigc": True, "template_id": "t1"})  # fmt: skip
    posted = event("PublishCompleted", "reelfab.publish.completed.v1", {**common, "event_id": str(uuid.uuid4()),
        "platform": "tiktok", "post_id": "p1", "account": "acc", "published_at": datetime.now(UTC),
        "privacy_level": "SELF_ONLY", "dry_run": True})  # fmt: skip
    await handlers.on_rendered(planner)(rendered)  # out of order: render before swap
    await handlers.on_swapped(planner)(swapped)
    await handlers.on_published(planner)(posted)
    await handlers.on_published(planner)(posted)  # redelivered
    row = await planner.store.job(job["job_id"])
    assert row is not None and row.status == "published"
    assert [s.status for s in row.steps] == ["requested", "rendered", "swapped", "published"]
    assert row.lineage["final_sha256"] == "c" * 64 and row.lineage["mezzanine_sha256"] == "a" * 64
    assert row.lineage["template_sha256"] == "1" * 64 and row.subject_id == "vera" and row.consent_version == 1


async def test_a_failure_is_recorded_with_its_stage_and_reason() -> None:
    planner = make_planner("vera")
    await plan_now(planner, 1, "cli")
    job_id = published(planner, SWAP_REQUESTED)[0]["job_id"]
    failed = event("JobFailed", "reelfab.job.failed.v1", {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC),
        "producer": "swapper-gpu", "job_id": job_id, "stage": "swapper-gpu", "reason_code": "revoked",
        "reason": "consent v1 of vera was revoked", "retryable": False})  # fmt: skip
    await handlers.on_failed(planner)(failed)
    row = await planner.store.job(job_id)
    assert row is not None and row.status == "failed"
    assert (row.failed_stage, row.failed_reason_code) == ("swapper-gpu", "revoked")
    assert await planner.store.produced() == frozenset()  # a failed combination may be planned again


async def test_a_flag_disables_a_subject_for_planning_at_once() -> None:
    planner = make_planner("vera", "ada")
    flag = event("SubjectFlagged", "reelfab.subject.flagged.v1", {"event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC), "producer": "analytics", "subject_id": "vera", "subject_kind": "FACE",
        "action": "DISABLED", "reason": "3 moderation strikes in 7 days"})  # fmt: skip
    await handlers.on_flag(planner)(flag)
    plan = await plan_now(planner, 10, "cli")
    assert {j.combination.subject for j in plan.jobs} == {"ada"}
    assert "flagged" in plan.excluded["vera"]


async def test_a_revocation_disables_a_subject_for_planning_at_once() -> None:
    planner = make_planner("vera", "ada")
    planner.view.apply(lease("vera", 2, "REVOKED"))
    plan = await plan_now(planner, 10, "cli")
    assert {j.combination.subject for j in plan.jobs} == {"ada"}


async def test_a_policy_update_changes_the_next_plan_and_unknown_arms_are_counted() -> None:
    planner = make_planner("vera", "ada")
    before = planner_metrics.POLICY_UNKNOWN_ARMS.labels("subject")._value.get()
    policy = event("PolicyUpdated", "reelfab.policy.updated.v1", {"event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC), "producer": "analytics", "arm_space": "subject", "policy_version": 4,
        "computed_at": datetime.now(UTC), "arms": arms(ada=(300, 20), vera=(20, 300), nobody=(5, 5))})  # fmt: skip
    await handlers.on_policy(planner)(policy)
    assert planner_metrics.POLICY_UNKNOWN_ARMS.labels("subject")._value.get() == before + 1
    for _ in range(5):
        plan = await plan_now(planner, 1, "cli", allow_repeats=True)
        assert plan.jobs[0].combination.subject == "ada"
    saved = await planner.store.policy()
    assert saved["subject"][0] == 4


async def test_a_plan_larger_than_the_space_plans_what_exists_and_says_so() -> None:
    planner = make_planner("vera")  # 1 subject x 2 templates x 1 bed x 2 styles
    plan = await plan_now(planner, 50, "cli")
    assert len(plan.jobs) == 4 and any("only 4 candidate(s)" in n for n in plan.notes)
    again = await plan_now(planner, 5, "cli")
    assert again.jobs == [] and any("only 0" in n for n in again.notes)
