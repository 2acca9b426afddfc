"""The publisher over its real PostgreSQL tables with the dry-run platform: rendered videos wait for
review and are never posted unapproved; an approval posts once (a redelivery posts nothing more);
engagement is read back from the simulator; bad renders, withdrawn consent and rejections end the job
with job.failed; takedowns queue up for operators; auto-approval only where an account allows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reelfab.contracts.topics import CONSENT_CHANGED, ENGAGEMENT_OBSERVED, JOB_FAILED, PUBLISH_COMPLETED
from reelfab_publisher import handlers
from reelfab_publisher.desk import Approval, ReviewError
from reelfab_publisher.review import ReviewDesk
from tests.integration.media_handlers_support import event, lease
from tests.integration.publisher_support import (
    Clock,
    add_account,
    announced,
    make_publisher,
    rendered,
    video,
)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def setup(pg_pool: Any, delivery_schema: str, tmp_path: Path) -> Any:
    clock = Clock()
    p, worker = await make_publisher(pg_pool, delivery_schema, tmp_path, clock=clock, subjects=("ada", "bob"))
    await add_account(p, "dry", platform="dryrun")
    return p, worker, clock, tmp_path


def posted_files(tmp: Path) -> list[Path]:
    return sorted((tmp / "dryrun").rglob("*.json")) if (tmp / "dryrun").exists() else []


async def test_an_unapproved_video_is_never_posted_and_an_approved_one_is_posted_once(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha, title="First dance")
    await handlers.on_render_completed(p)(ev)
    for _ in range(3):
        await worker.once()
    assert posted_files(tmp) == [] and await announced(p, PUBLISH_COMPLETED) == []
    desk = ReviewDesk(p)
    assert [i.job_id for i in await desk.waiting()] == [ev.record.job_id]

    await desk.approve(ev.record.job_id, Approval("dry", "FOLLOWER_OF_CREATOR", title="Edited title"), "alice")
    await worker.once()
    files = posted_files(tmp)
    assert len(files) == 1
    sidecar = json.loads(files[0].read_text())
    assert sidecar["is_aigc"] is True and sidecar["post_info"]["privacy_level"] == "FOLLOWER_OF_CREATOR"
    assert sidecar["post_info"]["title"].startswith("Edited title")
    (topic, value), = await announced(p, PUBLISH_COMPLETED)
    assert value["job_id"] == ev.record.job_id and value["dry_run"] is True and value["post_id"] == sidecar["post_id"]

    # redelivered (a new event for the same job) and the worker again: nothing more is posted
    await handlers.on_render_completed(p)(rendered(uri, sha, job=ev.record.job_id))
    for _ in range(2):
        await worker.once()
    assert len(posted_files(tmp)) == 1 and len(await announced(p, PUBLISH_COMPLETED)) == 1
    audit = await p.repo.audit_of(ev.record.job_id)
    approved = next(a for a in audit if a["action"] == "approved")
    assert approved["actor"] == "alice" and approved["detail"]["privacy_level"] == "FOLLOWER_OF_CREATOR"
    assert approved["detail"]["is_aigc"] is True

    # engagement is read back once the first read falls due, then again later, cumulative
    assert await announced(p, ENGAGEMENT_OBSERVED) == []
    clock.advance(3600)
    await worker.once()
    clock.advance(6 * 3600)
    await worker.once()
    readings = [v for _, v in await announced(p, ENGAGEMENT_OBSERVED)]
    assert len(readings) == 2 and readings[0]["post_id"] == value["post_id"]
    assert readings[1]["views"] >= readings[0]["views"] > 0
    assert readings[0]["subject_id"] == "ada" and readings[0]["arm_id"] == "ada~tpl-1~-~plain"


async def test_a_missing_or_altered_render_is_refused_and_nothing_is_queued(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    altered = rendered(uri, "0" * 64)
    await handlers.on_render_completed(p)(altered)
    missing = rendered(uri.replace("final.mp4", "gone.mp4"), sha)
    await handlers.on_render_completed(p)(missing)
    off_spec = rendered(uri, sha, passed=False)
    await handlers.on_render_completed(p)(off_spec)
    failed = {v["job_id"]: v for _, v in await announced(p, JOB_FAILED)}
    assert failed[altered.record.job_id]["reason_code"] == "render_sha256_mismatch"
    assert sha in failed[altered.record.job_id]["reason"]
    assert failed[missing.record.job_id]["reason_code"] == "render_missing"
    assert failed[off_spec.record.job_id]["reason_code"] == "spec_check_failed"
    assert await ReviewDesk(p).waiting() == []


async def test_a_file_changed_after_review_is_not_uploaded(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    await ReviewDesk(p).approve(ev.record.job_id, Approval("dry", "SELF_ONLY"), "alice")
    p.store.local_path(uri).write_bytes(b"something else")
    await worker.once()
    assert posted_files(tmp) == []
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["reason_code"] == "render_sha256_mismatch" and "nothing was uploaded" in failed["reason"]


async def test_consent_withdrawn_after_approval_stops_the_post(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha, subject="bob")
    await handlers.on_render_completed(p)(ev)
    await ReviewDesk(p).approve(ev.record.job_id, Approval("dry", "SELF_ONLY"), "alice")
    p.view.apply(lease("bob", 2, "REVOKED"))  # the view took the revocation in; the event is still coming
    await worker.once()
    assert posted_files(tmp) == []
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["reason_code"] == "consent.revoked" and failed["stage"] == "publisher"
    assert (await ReviewDesk(p).item(ev.record.job_id)).status == "stopped"


async def test_a_commercial_job_outside_the_consent_is_not_posted(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    commercial = rendered(uri, sha, commercial=True)  # the test leases allow no commercial use
    other_tag = rendered(uri, sha, tags=("horror",))  # ... and only the tag dance
    for ev in (commercial, other_tag):
        await handlers.on_render_completed(p)(ev)
        await ReviewDesk(p).approve(ev.record.job_id, Approval("dry", "SELF_ONLY"), "alice")
    await worker.once()
    assert posted_files(tmp) == []
    codes = {v["job_id"]: v["reason_code"] for _, v in await announced(p, JOB_FAILED)}
    assert codes[commercial.record.job_id].startswith("consent.") and codes[other_tag.record.job_id].startswith("consent.")


async def test_revocation_event_stops_open_jobs_and_queues_takedowns(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    published = rendered(uri, sha, subject="bob")
    waiting = rendered(uri, sha, subject="bob")
    await handlers.on_render_completed(p)(published)
    await ReviewDesk(p).approve(published.record.job_id, Approval("dry", "SELF_ONLY"), "alice")
    await worker.once()
    (_, pub), = await announced(p, PUBLISH_COMPLETED)
    await handlers.on_render_completed(p)(waiting)

    revoked = lease("bob", 2, "REVOKED")
    value = {"event_id": "ev-revoke-bob", "occurred_at": clock(), "producer": "consent-registry", "subject_id": "bob",
             "change": "REVOKED", "consent_version": 2, "display_name": "Bob", "document_sha256": "e" * 64,
             "scope": {"platforms": ["tiktok"], "allowed_tags": ["dance"], "territories": [], "commercial_use": False},
             "valid_from": clock(), "embedding_digest": "d" * 64, "lease": revoked["lease"],
             "reason": "the subject asked", "takedown_post_ids": [pub["post_id"], "7000000000000000001"]}
    ev = event("ConsentChanged", CONSENT_CHANGED, value)
    await handlers.on_consent_changed(p)(ev)
    await handlers.on_consent_changed(p)(ev)  # redelivered: nothing twice
    desk = ReviewDesk(p)
    assert (await desk.item(waiting.record.job_id)).status == "stopped"
    takedowns = await desk.takedowns()
    assert [t.post_id for t in takedowns] == ["7000000000000000001"]  # the dry-run one is done already
    mine = next(t for t in await desk.takedowns(include_done=True) if t.post_id == pub["post_id"])
    assert mine.job_id == published.record.job_id and mine.account == "dry" and "the subject asked" in mine.reason
    assert mine.done_by == "publisher" and mine.done_at is not None and "removed" in (mine.note or "")
    assert posted_files(tmp) == [] and not list((tmp / "dryrun").rglob("*.mp4"))  # the dry-run post is gone
    stops = [v for _, v in await announced(p, JOB_FAILED) if v["job_id"] == waiting.record.job_id]
    assert len(stops) == 1 and stops[0]["reason_code"] == "consent.revoked"
    await desk.takedown_done("7000000000000000001", "alice", "removed in the app")
    assert await desk.takedowns() == []
    done = next(t for t in await desk.takedowns(include_done=True) if t.post_id == "7000000000000000001")
    assert done.done_by == "alice" and done.note == "removed in the app"
    with pytest.raises(ReviewError, match="already, by publisher"):
        await desk.takedown_done(pub["post_id"], "bob", "me too")


async def test_rejection_ends_the_job_and_is_audited(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    desk = ReviewDesk(p)
    with pytest.raises(ReviewError, match="reason"):
        await desk.reject(ev.record.job_id, "  ", "alice")
    await desk.reject(ev.record.job_id, "face looks wrong", "alice")
    with pytest.raises(ReviewError, match="rejected"):
        await desk.approve(ev.record.job_id, Approval("dry", "SELF_ONLY"), "bob")
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["reason_code"] == "rejected_in_review" and "alice" in failed["reason"]
    await worker.once()
    assert posted_files(tmp) == []
    assert [a["action"] for a in await p.repo.audit_of(ev.record.job_id)] == ["rejected"]


async def test_approval_needs_an_offered_privacy_level_and_a_fitting_video(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    desk = ReviewDesk(p)
    with pytest.raises(ReviewError, match="no default"):
        await desk.approve(ev.record.job_id, Approval("dry", ""), "alice")
    with pytest.raises(ReviewError, match="not offered"):
        await desk.approve(ev.record.job_id, Approval("dry", "EVERYONE_PLEASE"), "alice")
    with pytest.raises(ReviewError, match="no account"):
        await desk.approve(ev.record.job_id, Approval("nobody", "SELF_ONLY"), "alice")
    for bad in ("two words", "<b>x</b>", '"onmouseover=alert(1)'):
        with pytest.raises(ReviewError, match="hashtag"):
            await desk.approve(ev.record.job_id, Approval("dry", "SELF_ONLY", hashtags=(bad,)), "alice")
    assert (await desk.item(ev.record.job_id)).status == "waiting"


async def test_a_title_over_the_limit_is_trimmed_by_rule(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    long_title = "dance " * 500  # 3000 characters
    ev = rendered(uri, sha, title=long_title, hashtags=("one", "two"))
    await handlers.on_render_completed(p)(ev)
    await ReviewDesk(p).approve(ev.record.job_id, Approval("dry", "SELF_ONLY"), "alice")
    await worker.once()
    sidecar = json.loads(posted_files(tmp)[0].read_text())
    title = sidecar["post_info"]["title"]
    assert len(title.encode("utf-16-le")) // 2 <= 2200 and title.endswith("…") and "#one" not in title


async def test_auto_approval_only_for_accounts_that_allow_it(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    await worker.once()
    assert posted_files(tmp) == []  # "dry" does not auto-approve
    await add_account(p, "auto-dry", platform="dryrun", auto=True, auto_privacy="SELF_ONLY")
    await worker.once()
    await worker.once()
    assert len(posted_files(tmp)) == 1
    item = await ReviewDesk(p).item(ev.record.job_id)
    assert item.decided_by == "auto:auto-dry" and item.status == "published"
    assert [a["action"] for a in await p.repo.audit_of(ev.record.job_id)][0] == "auto_approved"


async def test_the_service_wires_every_consumed_topic_and_its_review_page(pg_pool: Any, delivery_schema: str,
                                                                         tmp_path: Path) -> None:
    import dataclasses

    from reelfab.bus.memory import InMemoryBus
    from reelfab.contracts.codec import default_codec
    from reelfab.service import build_context
    from reelfab.settings import Settings
    from reelfab_publisher import main

    settings = Settings(state_dir=tmp_path / "state")
    spec = dataclasses.replace(main.SPEC, db_schema=delivery_schema)
    ctx = build_context(spec, settings, InMemoryBus(settings, spec.name, default_codec()), pg_pool, main.wire)
    assert set(main.SPEC.consumes) <= {s.topic.name for s in ctx.bus.subscriptions}
    assert {"api", "desk", "worker"} <= set(ctx.extras)


async def test_review_sessions_live_on_the_server_and_end_at_logout_or_a_new_token(setup: Any) -> None:
    from reelfab_publisher.review import token_sha256

    p, clock = setup[0], setup[2]
    desk = ReviewDesk(p)
    await p.repo.add_operator("alice", token_sha256("tok-1"))
    assert await desk.start_session("wrong") is None
    session, name = await desk.start_session("tok-1") or ("", "")
    assert name == "alice" and "tok-1" not in session and await desk.session(session) == "alice"
    other, _ = await desk.start_session("tok-1") or ("", "")
    await desk.end_session(session)
    assert await desk.session(session) is None and await desk.session(other) == "alice"  # logout ends only its own
    clock.advance(1)
    await p.repo.add_operator("alice", token_sha256("tok-2"))  # a new token ends the sessions of the old
    assert await desk.session(other) is None
    third, _ = await desk.start_session("tok-2") or ("", "")
    assert await desk.session(third) == "alice"
    clock.advance(13 * 3600)
    assert await desk.session(third) is None  # expired
    await p.repo.revoke_operator("alice")
    assert await desk.start_session("tok-2") is None


async def test_auto_approval_needs_its_own_privacy_level(setup: Any) -> None:
    p, worker, clock, tmp = setup
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    await add_account(p, "auto-no-level", platform="dryrun", auto=True)  # (the CLI refuses this; a row may not)
    for _ in range(3):
        await worker.once()
    assert posted_files(tmp) == [] and (await ReviewDesk(p).item(ev.record.job_id)).status == "waiting"


async def test_a_video_approved_for_a_removed_account_goes_back_to_review(setup: Any) -> None:
    p, worker, clock, tmp = setup
    await add_account(p, "dry2", platform="dryrun")
    uri, sha = video(p, tmp)
    ev = rendered(uri, sha)
    await handlers.on_render_completed(p)(ev)
    await ReviewDesk(p).approve(ev.record.job_id, Approval("dry2", "SELF_ONLY"), "alice")
    assert await p.repo.remove_account("dry2")
    await worker.once()
    item = await ReviewDesk(p).item(ev.record.job_id)
    assert item.status == "waiting" and "dry2" in (item.reason or "") and posted_files(tmp) == []
    assert await announced(p, JOB_FAILED) == []
