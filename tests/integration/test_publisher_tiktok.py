"""The publisher against the strict TikTok emulator (tests/tiktok_emulator.py) over its real PostgreSQL
tables: a direct post end to end with is_aigc always sent; exactly once through a kill after init and a
kill mid-upload plus redelivery; an expired access token refreshed (the rotated refresh token stored)
and the call retried once; 429 backed off; spam risk pausing the account and striking; an unaudited
client understood; an inbox draft followed until the creator posts it; a video longer than allowed,
a refused refresh token (the post waits, no busy loop) and a contract break named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reelfab.contracts.topics import JOB_FAILED, PUBLISH_COMPLETED
from reelfab_publisher import handlers
from reelfab_publisher.desk import Approval, ReviewError
from reelfab_publisher.review import ReviewDesk
from reelfab_publisher.tiktok_api import TikTokClient
from tests.integration.publisher_support import Clock, add_account, announced, make_publisher, rendered, video
from tests.tiktok_emulator import PRIVATE_ACCOUNT_OPTIONS, Emulator, running_emulator

pytestmark = [pytest.mark.postgres]
MB = 1024 * 1024


class Killed(BaseException):
    """A process death injected after a step was persisted (nothing after it runs)."""


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with running_emulator() as e:
        yield e


async def no_sleep(_: float) -> None:
    return None


def client_for(emu: Emulator, sleeps: list[float] | None = None) -> TikTokClient:
    async def sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    return TikTokClient(emu.url, client_key=emu.client_key, client_secret=emu.client_secret, sleep=sleep,
                        backoff_initial_s=0.01, backoff_max_s=0.05)


@pytest.fixture
async def setup(pg_pool: Any, delivery_schema: str, tmp_path: Path, emu: Emulator) -> Any:
    clock = Clock()
    sleeps: list[float] = []
    p, worker = await make_publisher(pg_pool, delivery_schema, tmp_path, client=client_for(emu, sleeps), clock=clock,
                                     publisher_chunk_mb=5)
    user = emu.add_user("open-ada")
    await add_account(p, "tt", open_id="open-ada", access=user.access_token, refresh=user.refresh_token)
    yield p, worker, clock, tmp_path, emu, sleeps
    assert p.client is not None
    await p.client.aclose()


async def approved(p: Any, tmp: Path, *, size: int = 300_000, privacy: str = "PUBLIC_TO_EVERYONE",
                   account: str = "tt", **kw: Any) -> Any:
    uri, sha = video(p, tmp, size)
    ev = rendered(uri, sha, **kw)
    await handlers.on_render_completed(p)(ev)
    await ReviewDesk(p).approve(ev.record.job_id, Approval(account, privacy), "alice")
    return ev


async def run(worker: Any, passes: int = 4) -> None:
    for _ in range(passes):
        await worker.post_due()
        worker.p.clock.advance(5)  # status polls fall due


async def test_a_direct_post_goes_through_and_always_says_ai_generated(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.processing_fetches = 2
    ev = await approved(p, tmp, title="Hello", hashtags=("dance",))
    await run(worker, 6)
    post, = emu.posts
    assert post.post_info is not None and post.post_info["is_aigc"] is True
    assert post.post_info["privacy_level"] == "PUBLIC_TO_EVERYONE" and post.post_info["title"] == "Hello #dance"
    assert post.sha256 == ev.record.final_sha256
    (_, done), = await announced(p, PUBLISH_COMPLETED)
    assert done["post_id"] == post.post_id and done["dry_run"] is False and done["account"] == "tt"
    assert all(i.body["post_info"]["is_aigc"] is True for i in emu.inits)
    # polling stopped at PUBLISH_COMPLETE
    fetches = len(emu.status_fetches)
    await run(worker, 3)
    assert len(emu.status_fetches) == fetches


async def test_a_kill_after_init_then_redelivery_posts_exactly_once(setup: Any, pg_pool: Any, delivery_schema: str,
                                                                     tmp_path: Path) -> None:
    p, worker, clock, tmp, emu, _ = setup

    async def die(job_id: str) -> None:
        raise Killed(job_id)

    p.after_init = die
    ev = await approved(p, tmp)
    with pytest.raises(Killed):
        await worker.post_due()
    assert len(emu.inits) == 1 and emu.posts == []
    # a new process: its claim on the job ran out; the event comes again
    p.after_init = None
    clock.advance(p.claim_lease_s + 1)
    await handlers.on_render_completed(p)(rendered(ev.record.final_uri, ev.record.final_sha256, job=ev.record.job_id))
    await run(worker, 5)
    assert len(emu.inits) == 1, "resumed the same publish instead of a second init"
    assert len(emu.posts) == 1 and len(await announced(p, PUBLISH_COMPLETED)) == 1


async def test_a_kill_mid_upload_resumes_from_what_the_platform_holds(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup

    async def die_after_first(job_id: str, index: int) -> None:
        if index == 0:
            raise Killed(job_id)

    p.after_chunk = die_after_first
    ev = await approved(p, tmp, size=16 * MB)  # 3 chunks of 5 MB, the last 6 MB
    with pytest.raises(Killed):
        await worker.post_due()
    assert emu.posts == []
    p.after_chunk = None
    clock.advance(p.claim_lease_s + 1)
    await run(worker, 5)
    assert len(emu.inits) == 1 and len(emu.posts) == 1
    assert emu.posts[0].sha256 == ev.record.final_sha256 and emu.posts[0].size == 16 * MB


async def test_an_expired_access_token_is_refreshed_rotated_and_the_call_retried_once(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    user = emu.users["open-ada"]
    old_refresh = user.refresh_token
    emu.expire_access_token("open-ada")  # TikTok refuses it; our record still thinks it valid
    await approved(p, tmp)
    await run(worker, 4)
    assert len(emu.posts) == 1
    assert len(emu.requests_to("token")) == 1
    account = await p.repo.account("tt")
    assert account is not None and account.refresh_token is not None
    stored = p.tokens.cipher.open(account.refresh_token)
    assert stored == emu.users["open-ada"].refresh_token != old_refresh  # the rotated one, stored at once


async def test_a_token_about_to_expire_is_refreshed_before_use(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    await approved(p, tmp)
    clock.advance(7200 - 60)  # inside the refresh margin
    await run(worker, 4)
    assert len(emu.requests_to("token")) == 1 and len(emu.posts) == 1
    refused = [r for r in emu.requests if r.code == "access_token_invalid"]
    assert refused == []  # refreshed before it was ever refused


async def test_429_backs_off_and_the_post_goes_through(setup: Any) -> None:
    p, worker, clock, tmp, emu, sleeps = setup
    emu.fail_next("init_direct", "rate_limit_exceeded", 429, retry_after=0.02)
    await approved(p, tmp)
    await run(worker, 4)
    assert len(emu.posts) == 1
    assert sleeps and sleeps[0] > 0  # the client waited before trying again
    assert [r.status for r in emu.requests_to("init_direct")] == [429, 200]


async def test_spam_risk_pauses_the_account_and_strikes(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.fail_next("init_direct", "spam_risk_too_many_posts", 403)
    first = await approved(p, tmp)
    await run(worker, 2)
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["job_id"] == first.record.job_id and failed["reason_code"] == "spam_risk"
    account = await p.repo.account("tt")
    assert account is not None and account.paused_until is not None and account.paused_until > clock()
    # the next approved video waits while the account rests, without asking the platform
    with pytest.raises(ReviewError, match="paused"):
        await approved(p, tmp)
    inits = len(emu.inits)
    await p.repo.update_account("tt", paused_until=None)  # (approve it while allowed, then pause again)
    second = await approved(p, tmp)
    await p.repo.pause("tt", clock() + __import__("datetime").timedelta(hours=1), "spam risk")
    await run(worker, 3)
    assert len(emu.inits) == inits and emu.posts == []
    item = await ReviewDesk(p).item(second.record.job_id)
    assert item.status == "approved" and "paused" in item.lineage["waiting for"]
    clock.advance(3601)
    await run(worker, 4)
    assert len(emu.posts) == 1


async def test_an_unaudited_client_is_understood(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.unaudited = True
    ev = await approved(p, tmp, privacy="PUBLIC_TO_EVERYONE")
    await run(worker, 2)
    assert emu.posts == [] and await announced(p, JOB_FAILED) == []
    desk = ReviewDesk(p)
    item = await desk.item(ev.record.job_id)  # back in the queue, saying why: an operator decides again
    assert item.status == "waiting" and item.reason is not None and "SELF_ONLY" in item.reason
    assert "not audited" in item.reason and item.account is None
    choice, = [a for a in await desk.accounts() if a.name == "tt"]
    assert choice.privacy_level_options == ("SELF_ONLY",)  # the desk now offers only what is allowed
    emu.set_creator("open-ada", privacy_level_options=PRIVATE_ACCOUNT_OPTIONS)  # the creator made it private
    await desk.approve(ev.record.job_id, Approval("tt", "SELF_ONLY"), "alice")
    await run(worker, 4)
    assert len(emu.posts) == 1 and emu.posts[0].post_info["privacy_level"] == "SELF_ONLY"  # type: ignore[index]


async def test_polling_stops_at_failed_with_the_reason(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.fail_publish("file_format_check_failed")
    ev = await approved(p, tmp)
    await run(worker, 4)
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["job_id"] == ev.record.job_id and "file_format_check_failed" in failed["reason"]
    fetches = len(emu.status_fetches)
    await run(worker, 3)
    assert len(emu.status_fetches) == fetches


async def test_a_video_longer_than_the_creator_allows_is_refused(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.set_creator("open-ada", max_video_post_duration_sec=15)
    with pytest.raises(ReviewError, match="at most 15"):
        await approved(p, tmp, duration_s=20.0)
    # approved while it was allowed, then the creator's limit shrank: refused at posting, nothing uploaded
    emu.set_creator("open-ada", max_video_post_duration_sec=60)
    ev = await approved(p, tmp, duration_s=20.0)
    emu.set_creator("open-ada", max_video_post_duration_sec=10)
    await run(worker, 2)
    (_, failed), = await announced(p, JOB_FAILED)
    assert failed["job_id"] == ev.record.job_id and failed["reason_code"] == "video_too_long"
    assert emu.inits == []


async def test_no_valid_token_makes_posts_wait_without_a_busy_loop(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    ev = await approved(p, tmp)
    emu.revoke_refresh_token("open-ada")
    emu.expire_access_token("open-ada")
    clock.advance(7200)  # our record knows the access token expired: a refresh is needed, and refused
    await run(worker, 1)
    item = await ReviewDesk(p).item(ev.record.job_id)
    assert item.status == "approved" and "no valid token" in item.lineage["waiting for"]
    calls = len(emu.requests)
    for _ in range(5):
        await worker.post_due()  # not due again for a while: nothing is asked
    assert len(emu.requests) == calls
    await worker.gauges()
    from reelfab_publisher import metrics
    assert metrics.ACCOUNTS_WITHOUT_TOKEN._value.get() == 1  # type: ignore[attr-defined]


async def test_an_inbox_draft_is_followed_until_the_creator_posts_it(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    user = emu.add_user("open-bea")
    await add_account(p, "tt-inbox", mode="inbox", open_id="open-bea", access=user.access_token,
                      refresh=user.refresh_token)
    ev = await approved(p, tmp, account="tt-inbox", privacy="INBOX_DRAFT")
    await run(worker, 3)
    assert (await ReviewDesk(p).item(ev.record.job_id)).status == "in_inbox"
    assert await announced(p, PUBLISH_COMPLETED) == []
    emu.creator_posts_draft(emu.inits[0].publish_id)
    clock.advance(p.settings.publisher_inbox_poll_s + 1)
    await run(worker, 2)
    (_, done), = await announced(p, PUBLISH_COMPLETED)
    assert done["job_id"] == ev.record.job_id and done["post_id"] == emu.posts[0].post_id


async def test_an_answer_that_breaks_the_contract_is_named_and_retried_later(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    emu.break_contract("init_direct", "drop:data.publish_id")
    ev = await approved(p, tmp)
    await run(worker, 1)
    item = await ReviewDesk(p).item(ev.record.job_id)
    assert item.status == "approved" and "publish_id" in item.lineage["waiting for"]
    assert emu.posts == []
    clock.advance(60)
    await run(worker, 4)
    assert len(emu.posts) == 1


async def test_a_kill_between_the_last_chunk_and_its_record_does_not_upload_again(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup

    async def lose_the_last_write(job_id: str, index: int) -> None:
        row = await p.repo.review(job_id)
        if index == row["total_chunks"] - 1:  # the platform has every byte; our row never learnt it
            await p.repo.update_review(None, job_id, chunks_done=index, upload_done=False)
            raise Killed(job_id)

    p.after_chunk = lose_the_last_write
    await approved(p, tmp, size=11 * MB)
    with pytest.raises(Killed):
        await worker.post_due()
    p.after_chunk = None
    uploads = len(emu.requests_to("upload"))
    clock.advance(p.claim_lease_s + 1)
    await run(worker, 5)
    assert len(emu.requests_to("upload")) == uploads, "no chunk was sent again"
    assert len(emu.inits) == 1 and len(emu.posts) == 1 and len(await announced(p, PUBLISH_COMPLETED)) == 1


async def test_an_unapproved_video_never_reaches_the_platform(setup: Any) -> None:
    p, worker, clock, tmp, emu, _ = setup
    uri, sha = video(p, tmp)
    await handlers.on_render_completed(p)(rendered(uri, sha))
    for _ in range(3):
        await worker.once()
        clock.advance(3600)
    assert [r.endpoint for r in emu.requests if r.endpoint != "creator_info"] == []
    assert emu.inits == [] and emu.posts == []


async def test_a_withdrawal_while_the_last_chunk_is_in_flight_sends_the_post_to_takedown(
        pg_pool: Any, delivery_schema: str, tmp_path: Path) -> None:
    import asyncio
    import threading

    from reelfab.contracts.topics import CONSENT_CHANGED
    from tests.integration.media_handlers_support import event, lease

    entered, release = threading.Event(), threading.Event()
    emu = Emulator()
    inner = emu.app

    async def held(scope: Any, receive: Any, send: Any) -> None:  # the chunk PUT waits until the test says
        if scope["type"] == "http" and scope["method"] == "PUT":
            entered.set()
            await asyncio.to_thread(release.wait, 30)
        await inner(scope, receive, send)

    emu.app = held  # type: ignore[assignment]
    with running_emulator(emu):
        clock = Clock()
        p, worker = await make_publisher(pg_pool, delivery_schema, tmp_path, client=client_for(emu), clock=clock)
        user = emu.add_user("open-ada")
        await add_account(p, "tt", open_id="open-ada", access=user.access_token, refresh=user.refresh_token)
        ev = await approved(p, tmp_path)  # one chunk: the last one makes the post
        posting = asyncio.create_task(worker.post_due())
        await asyncio.to_thread(entered.wait, 30)
        revoked = lease("ada", 2, "REVOKED")
        await handlers.on_consent_changed(p)(event("ConsentChanged", CONSENT_CHANGED, {
            "event_id": "ev-revoke-inflight", "occurred_at": clock(), "producer": "consent-registry",
            "subject_id": "ada", "change": "REVOKED", "consent_version": 2, "display_name": "Ada",
            "document_sha256": "e" * 64, "scope": {"platforms": ["tiktok"], "allowed_tags": ["dance"], "territories": [],
                                                   "commercial_use": False},
            "valid_from": clock(), "embedding_digest": "d" * 64, "lease": revoked["lease"], "takedown_post_ids": []}))
        release.set()  # the chunk lands after the stop: TikTok makes the post
        await posting
        (_, stop), = await announced(p, JOB_FAILED)
        assert stop["reason_code"] == "consent.revoked" and "being checked" in stop["reason"]
        assert len(emu.posts) == 1
        desk = ReviewDesk(p)
        assert await desk.takedowns() == []
        clock.advance(31)
        await worker.verify_stopped()
        takedown, = await desk.takedowns()
        assert takedown.post_id == emu.posts[0].post_id and takedown.job_id == ev.record.job_id
        assert "withdrawn" in takedown.reason
        item = await desk.item(ev.record.job_id)
        assert item.reason is not None and "anyway" in item.reason and takedown.post_id in item.reason
        assert await worker.verify_stopped() == 0  # asked once, settled
        assert p.client is not None
        await p.client.aclose()
