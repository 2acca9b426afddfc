"""The publisher's TikTok client against the strict local emulator (tests/tiktok_emulator.py): a real HTTP
server on 127.0.0.1 that refuses what TikTok refuses. Time is fake and shared by the client and the
emulator, so backoff, throttling and expiry are tested without waiting."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from reelfab_publisher.chunks import ChunkPlan, chunk_plan
from reelfab_publisher.tiktok_api import (
    AccessTokenInvalid,
    ContractViolation,
    InitResult,
    InvalidGrant,
    PostInfo,
    PrivacyLevelMismatch,
    PublishStatus,
    RateLimited,
    ScopeNotAuthorized,
    SpamRisk,
    TikTokClient,
    TikTokError,
    TikTokUnavailable,
    UnauditedClient,
    UnknownPublish,
    UploadRefused,
)
from tests.tiktok_emulator import PRIVATE_ACCOUNT_OPTIONS, Emulator, User, running_emulator

MB = 1024 * 1024
PUBLIC = "PUBLIC_TO_EVERYONE"


class FakeTime:
    """A clock and a sleep that advances it, shared by the client and the emulator."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture(scope="module")
def server() -> Iterator[Emulator]:
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def emu(server: Emulator, fake: FakeTime) -> Emulator:
    server.reset(clock=fake.clock)  # a fresh TikTok for each test, on the module's one server
    return server


@pytest.fixture
def alice(emu: Emulator) -> User:
    return emu.add_user("alice-open-id", username="alice")


def make_client(emu: Emulator, fake: FakeTime, **overrides: Any) -> TikTokClient:
    options: dict[str, Any] = dict(client_key=emu.client_key, client_secret=emu.client_secret, sleep=fake.sleep,
                                   clock=fake.clock, timeout_s=10.0)
    options.update(overrides)
    return TikTokClient(emu.url, **options)


@pytest.fixture
async def client(emu: Emulator, fake: FakeTime) -> AsyncIterator[TikTokClient]:
    async with make_client(emu, fake) as tiktok:
        yield tiktok


def video(size: int) -> bytes:
    return os.urandom(size)


def post(title: str = "a synthetic clip #fyp", privacy_level: str = PUBLIC, **kwargs: Any) -> PostInfo:
    return PostInfo(title=title, privacy_level=privacy_level, **kwargs)


async def upload(client: TikTokClient, init: InitResult, data: bytes, plan: ChunkPlan, start: int = 0) -> list[bool]:
    done = []
    for first, last in plan.ranges()[start:]:
        done.append(await client.upload_chunk(init.upload_url, data[first:last + 1], first, last, plan.video_size))
    return done


async def poll(client: TikTokClient, token: str, publish_id: str, limit: int = 20) -> list[PublishStatus]:
    seen: list[PublishStatus] = []
    while len(seen) < limit:
        seen.append(await client.fetch_status(token, publish_id))
        if seen[-1].terminal or seen[-1].status == "SEND_TO_USER_INBOX":
            return seen
    raise AssertionError(f"no terminal status after {limit} fetches: {seen[-1]}")


async def direct_post(client: TikTokClient, user: User, data: bytes, plan: ChunkPlan, info: PostInfo) -> str:
    init = await client.init_direct(user.access_token, info, plan)
    assert (await upload(client, init, data, plan))[-1] is True
    return init.publish_id


# --- the happy paths --------------------------------------------------------------------------------


async def test_direct_post_of_a_small_file(client: TikTokClient, emu: Emulator, alice: User) -> None:
    emu.processing_fetches = 2
    data = video(300 * 1024)
    creator = await client.creator_info(alice.access_token)
    assert creator.creator_username == "alice" and PUBLIC in creator.privacy_level_options
    plan = chunk_plan(len(data))
    init = await client.init_direct(alice.access_token, post(privacy_level=creator.privacy_level_options[0]), plan)
    assert await upload(client, init, data, plan) == [True]
    statuses = await poll(client, alice.access_token, init.publish_id)
    assert [s.status for s in statuses] == ["PROCESSING_UPLOAD", "PROCESSING_UPLOAD", "PUBLISH_COMPLETE"]
    [posted] = emu.posts
    assert posted.publish_id == init.publish_id and posted.sha256 == hashlib.sha256(data).hexdigest()
    assert statuses[-1].post_ids == (posted.post_id,) and statuses[-1].uploaded_bytes == len(data)
    assert posted.post_info is not None and posted.post_info["title"] == "a synthetic clip #fyp"


async def test_direct_post_of_a_multi_chunk_file(emu: Emulator, fake: FakeTime, alice: User) -> None:
    data = video(11 * MB)
    plan = chunk_plan(len(data), preferred_chunk_size=5 * MB)
    assert (plan.chunk_size, plan.total_chunk_count) == (5 * MB, 2)
    async with make_client(emu, fake) as client:
        init = await client.init_direct(alice.access_token, post(), plan)
        assert await upload(client, init, data, plan) == [False, True]  # 206, then 201
        assert (await poll(client, alice.access_token, init.publish_id))[-1].status == "PUBLISH_COMPLETE"
    assert [r.status for r in emu.requests_to("upload")] == [206, 201]
    assert [p.sha256 for p in emu.posts] == [hashlib.sha256(data).hexdigest()]


async def test_is_aigc_true_is_sent_on_every_init_and_cannot_be_turned_off(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    assert "is_aigc" not in {f.name for f in dataclasses.fields(PostInfo)}
    plan = chunk_plan(1000)
    for info in (post(), post(disable_comment=True, brand_organic_toggle=True), post(privacy_level="SELF_ONLY")):
        await client.init_direct(alice.access_token, info, plan)
    bodies = [i.body for i in emu.inits if i.mode == "direct"]
    assert len(bodies) == 3 and all(b["post_info"]["is_aigc"] is True for b in bodies)
    assert bodies[1]["post_info"]["disable_comment"] is True and bodies[2]["post_info"]["privacy_level"] == "SELF_ONLY"


async def test_inbox_upload_waits_for_the_creator(client: TikTokClient, emu: Emulator, alice: User) -> None:
    data = video(2000)
    plan = chunk_plan(len(data))
    init = await client.init_inbox(alice.access_token, plan)
    assert await upload(client, init, data, plan) == [True]
    waiting = (await poll(client, alice.access_token, init.publish_id))[-1]
    assert waiting.status == "SEND_TO_USER_INBOX" and not waiting.terminal and emu.posts == []
    assert "post_info" not in emu.inits[-1].body
    post_id = emu.creator_posts_draft(init.publish_id)
    done = await client.fetch_status(alice.access_token, init.publish_id)
    assert done.status == "PUBLISH_COMPLETE" and done.post_ids == (post_id,)
    assert [p.mode for p in emu.posts] == ["inbox"]


# --- rate limits ------------------------------------------------------------------------------------


async def test_a_429_is_retried_with_exponential_backoff(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.fail_next("init_direct", "rate_limit_exceeded", times=2)
    init = await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    assert init.publish_id and fake.sleeps == [1.0, 2.0]
    assert [r.status for r in emu.requests_to("init_direct")] == [429, 429, 200]


async def test_retry_after_is_honoured(client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.fail_next("status", "rate_limit_exceeded", retry_after=7)
    init = await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    await client.fetch_status(alice.access_token, init.publish_id)
    assert fake.sleeps == [7.0]


async def test_rate_limited_after_max_retries(client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.fail_next("init_direct", "rate_limit_exceeded", times=4)
    with pytest.raises(RateLimited) as caught:
        await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    assert fake.sleeps == [1.0, 2.0, 4.0] and len(emu.requests_to("init_direct")) == 4
    assert caught.value.code == "rate_limit_exceeded" and caught.value.retry_after_s == 8.0
    assert emu.inits == []


async def test_a_long_retry_after_is_handed_to_the_caller(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.fail_next("creator_info", "rate_limit_exceeded", retry_after=600)
    with pytest.raises(RateLimited) as caught:
        await client.creator_info(alice.access_token)
    assert caught.value.retry_after_s == 600 and fake.sleeps == []


async def test_the_client_waits_before_a_seventh_init_within_a_minute(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    plan = chunk_plan(1000)
    for _ in range(6):
        await client.init_direct(alice.access_token, post(), plan)
    assert fake.sleeps == []
    await client.init_direct(alice.access_token, post(), plan)
    assert fake.sleeps == [61.0]  # the minute since the first, and a second of margin
    assert all(r.status == 200 for r in emu.requests_to("init_direct")) and len(emu.inits) == 7


async def test_the_throttle_is_per_token(emu: Emulator, fake: FakeTime, alice: User) -> None:
    bob = emu.add_user("bob-open-id")
    async with make_client(emu, fake, status_per_minute=2) as client:
        init = await client.init_direct(alice.access_token, post(), chunk_plan(1000))
        for _ in range(2):
            await client.fetch_status(alice.access_token, init.publish_id)
        with pytest.raises(UnknownPublish):  # bob's first fetch does not wait for alice's window
            await client.fetch_status(bob.access_token, init.publish_id)
        assert fake.sleeps == []
        await client.fetch_status(alice.access_token, init.publish_id)
        assert fake.sleeps == [61.0]


async def test_the_emulator_refuses_a_seventh_init_from_a_client_that_does_not_wait(
        emu: Emulator, fake: FakeTime, alice: User) -> None:
    async with make_client(emu, fake, init_per_minute=50, max_retries=0) as client:
        for _ in range(6):
            await client.init_direct(alice.access_token, post(), chunk_plan(1000))
        with pytest.raises(RateLimited):
            await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    assert [r.status for r in emu.requests_to("init_direct")][-1] == 429 and len(emu.inits) == 6


# --- refusals ------------------------------------------------------------------------------------


async def test_spam_risk_codes(client: TikTokClient, emu: Emulator, alice: User) -> None:
    emu.fail_next("init_direct", "spam_risk_too_many_pending_share")
    with pytest.raises(SpamRisk) as injected:
        await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    assert injected.value.code == "spam_risk_too_many_pending_share" and injected.value.http_status == 403
    emu.daily_post_cap = 1
    await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    with pytest.raises(SpamRisk, match="spam_risk_too_many_posts"):
        await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    emu.ban_user(alice.open_id)
    with pytest.raises(SpamRisk) as banned:  # creator_info says it with HTTP 200, as documented
        await client.creator_info(alice.access_token)
    assert banned.value.code == "spam_risk_user_banned_from_posting" and banned.value.http_status == 200


async def test_an_unaudited_client_may_only_post_self_only_to_a_private_account(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    emu.unaudited = True
    with pytest.raises(UnauditedClient) as caught:
        await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    assert caught.value.code == "unaudited_client_can_only_post_to_private_accounts"
    assert "SELF_ONLY" in str(caught.value) and "audited" in str(caught.value)
    carol = emu.add_user("carol-open-id", privacy_level_options=PRIVATE_ACCOUNT_OPTIONS)
    data = video(5000)
    publish_id = await direct_post(client, carol, data, chunk_plan(len(data)), post(privacy_level="SELF_ONLY"))
    done = (await poll(client, carol.access_token, publish_id))[-1]
    assert done.status == "PUBLISH_COMPLETE" and done.post_ids == ()  # a private post's id is never given


async def test_a_privacy_level_not_offered_is_refused(client: TikTokClient, emu: Emulator) -> None:
    carol = emu.add_user("carol-open-id", privacy_level_options=PRIVATE_ACCOUNT_OPTIONS)
    with pytest.raises(PrivacyLevelMismatch):
        await client.init_direct(carol.access_token, post(privacy_level=PUBLIC), chunk_plan(1000))
    assert emu.inits == []


async def test_a_missing_scope(client: TikTokClient, emu: Emulator) -> None:
    dave = emu.add_user("dave-open-id", scopes=frozenset({"user.info.basic", "video.upload"}))
    with pytest.raises(ScopeNotAuthorized):
        await client.init_direct(dave.access_token, post(), chunk_plan(1000))
    assert (await client.init_inbox(dave.access_token, chunk_plan(1000))).publish_id


async def test_an_expired_access_token(client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.expire_access_token(alice.open_id)
    with pytest.raises(AccessTokenInvalid) as caught:
        await client.creator_info(alice.access_token)
    assert caught.value.http_status == 401 and alice.access_token not in str(caught.value)
    grant = await client.refresh_token(alice.refresh_token)
    assert (await client.creator_info(grant.access_token)).creator_username == "alice"
    fake.now += 7200  # the new one lives two hours
    with pytest.raises(AccessTokenInvalid):
        await client.creator_info(grant.access_token)


async def test_refresh_rotates_the_refresh_token(client: TikTokClient, emu: Emulator, alice: User) -> None:
    first = alice.refresh_token
    grant = await client.refresh_token(first)
    assert grant.refresh_token != first and grant.open_id == alice.open_id
    assert (grant.expires_in, grant.refresh_expires_in) == (7200, 15552000) and "video.publish" in grant.scope
    assert grant.access_token not in repr(grant) and grant.refresh_token not in repr(grant)
    with pytest.raises(InvalidGrant) as caught:
        await client.refresh_token(first)  # spent by the rotation
    assert caught.value.code == "invalid_grant" and first not in str(caught.value)
    again = await client.refresh_token(grant.refresh_token)
    assert again.refresh_token not in (first, grant.refresh_token)
    emu.oauth_error_http_status = 400  # the refusal reads the same whatever its HTTP status
    with pytest.raises(InvalidGrant):
        await client.refresh_token(grant.refresh_token)


async def test_a_refused_client_secret_is_not_an_invalid_grant(emu: Emulator, fake: FakeTime, alice: User) -> None:
    async with make_client(emu, fake, client_secret="not-the-secret") as client:
        with pytest.raises(TikTokError) as caught:
            await client.refresh_token(alice.refresh_token)
    assert caught.value.code == "invalid_client" and not isinstance(caught.value, InvalidGrant)
    assert "not-the-secret" not in str(caught.value) and alice.refresh_token not in str(caught.value)


async def test_tokens_are_kept_out_of_error_messages(client: TikTokClient, emu: Emulator, alice: User) -> None:
    emu.fail_next("creator_info", "access_token_invalid", message=f"token {alice.access_token} is unknown")
    with pytest.raises(AccessTokenInvalid) as caught:
        await client.creator_info(alice.access_token)
    assert alice.access_token not in str(caught.value) and "<redacted>" in str(caught.value)


async def test_server_errors_and_transport_errors_become_unavailable(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    emu.fail_next("status", "internal_error", http_status=503, times=4)
    with pytest.raises(TikTokUnavailable) as caught:
        await client.fetch_status(alice.access_token, "v_pub_file~v2-1.1")
    assert caught.value.code == "internal_error" and fake.sleeps == [1.0, 2.0, 4.0]
    closed = TikTokClient("http://127.0.0.1:9", client_key="k", client_secret="s", sleep=fake.sleep,
                          clock=fake.clock, max_retries=1)
    async with closed:
        with pytest.raises(TikTokUnavailable) as unreachable:
            await closed.creator_info(alice.access_token)
    assert unreachable.value.code == "transport_error" and alice.access_token not in str(unreachable.value)


async def test_a_title_over_2200_utf16_units_is_refused_before_any_request(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    await client.init_direct(alice.access_token, post(title="😀" * 1100), chunk_plan(1000))  # 2200 units
    with pytest.raises(ValueError, match="UTF-16"):
        await client.init_direct(alice.access_token, post(title="😀" * 1100 + "a"), chunk_plan(1000))
    assert len(emu.requests_to("init_direct")) == 1


# --- publish outcomes and uploads ------------------------------------------------------------------


async def test_a_failed_publish_carries_its_reason(client: TikTokClient, emu: Emulator, alice: User) -> None:
    data = video(4000)
    emu.fail_publish("spam_risk_text")
    first = await direct_post(client, alice, data, chunk_plan(len(data)), post())
    failed = (await poll(client, alice.access_token, first))[-1]
    assert (failed.status, failed.fail_reason, failed.terminal) == ("FAILED", "spam_risk_text", True)
    emu.video_duration_s = 601  # over the creator's 600 s
    second = await direct_post(client, alice, data, chunk_plan(len(data)), post())
    assert (await poll(client, alice.access_token, second))[-1].fail_reason == "duration_check_failed"
    assert emu.posts == []


async def test_an_upload_resumes_from_the_bytes_tiktok_holds(emu: Emulator, fake: FakeTime, alice: User) -> None:
    data = video(16 * MB)
    plan = chunk_plan(len(data), preferred_chunk_size=5 * MB)
    assert plan.total_chunk_count == 3
    ranges = plan.ranges()
    async with make_client(emu, fake) as client:
        init = await client.init_direct(alice.access_token, post(), plan)
        first, last = ranges[0]
        assert await client.upload_chunk(init.upload_url, data[first:last + 1], first, last, len(data)) is False
    # a restarted publisher asks TikTok where the upload stands
    async with make_client(emu, fake) as client:
        status = await client.fetch_status(alice.access_token, init.publish_id)
        assert (status.status, status.uploaded_bytes) == ("PROCESSING_UPLOAD", 5 * MB)
        for index in (0, 2):  # sending the received chunk again, or skipping one, is refused
            first, last = ranges[index]
            with pytest.raises(UploadRefused) as refused:
                await client.upload_chunk(init.upload_url, data[first:last + 1], first, last, len(data))
            assert (refused.value.code, refused.value.uploaded_bytes) == ("range_not_satisfiable", 5 * MB)
        resume_at = plan.resume_index(status.uploaded_bytes or 0)
        assert await upload(client, init, data, plan, start=resume_at) == [False, True]
        assert (await poll(client, alice.access_token, init.publish_id))[-1].status == "PUBLISH_COMPLETE"
    assert [p.sha256 for p in emu.posts] == [hashlib.sha256(data).hexdigest()]
    assert [r.status for r in emu.requests_to("upload")] == [206, 416, 416, 206, 201]


async def test_a_chunk_answered_with_a_server_error_is_sent_again(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    data = video(11 * MB)
    plan = chunk_plan(len(data), preferred_chunk_size=5 * MB)
    init = await client.init_direct(alice.access_token, post(), plan)
    emu.fail_next("upload", "gateway timeout", http_status=504)
    assert await upload(client, init, data, plan) == [False, True]
    assert fake.sleeps == [1.0] and [r.status for r in emu.requests_to("upload")] == [504, 206, 201]
    assert [p.sha256 for p in emu.posts] == [hashlib.sha256(data).hexdigest()]


async def test_a_chunk_that_arrived_although_its_answer_was_an_error_is_not_sent_twice(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    data = video(11 * MB)
    plan = chunk_plan(len(data), preferred_chunk_size=5 * MB)
    init = await client.init_direct(alice.access_token, post(), plan)
    emu.break_contract("upload", "status:502")  # stored, but answered 502
    assert await upload(client, init, data, plan) == [False, True]
    assert [r.status for r in emu.requests_to("upload")] == [502, 416, 201]
    assert len(emu.posts) == 1


async def test_a_chunk_off_the_plan_and_an_expired_upload_url_are_refused(
        client: TikTokClient, emu: Emulator, fake: FakeTime, alice: User) -> None:
    data = video(11 * MB)
    plan = chunk_plan(len(data), preferred_chunk_size=5 * MB)
    init = await client.init_direct(alice.access_token, post(), plan)
    with pytest.raises(UploadRefused) as wrong_size:  # 6 MB where the plan said 5 MB
        await client.upload_chunk(init.upload_url, data[:6 * MB], 0, 6 * MB - 1, len(data))
    assert (wrong_size.value.code, wrong_size.value.http_status) == ("bad_request", 400)
    fake.now += 3601  # an upload URL lives one hour
    with pytest.raises(UploadRefused) as expired:
        await client.upload_chunk(init.upload_url, data[:5 * MB], 0, 5 * MB - 1, len(data))
    assert (expired.value.code, expired.value.http_status) == ("upload_url_expired", 403)
    assert "upload_token" not in str(expired.value)
    assert emu.posts == []


async def test_status_of_another_users_publish_is_refused(client: TikTokClient, emu: Emulator, alice: User) -> None:
    bob = emu.add_user("bob-open-id")
    init = await client.init_direct(alice.access_token, post(), chunk_plan(1000))
    with pytest.raises(UnknownPublish, match="token_not_authorized_for_specified_publish_id"):
        await client.fetch_status(bob.access_token, init.publish_id)
    with pytest.raises(UnknownPublish, match="invalid_publish_id"):
        await client.fetch_status(alice.access_token, "v_pub_file~v2-1.404")


# --- engagement ------------------------------------------------------------------------------------


async def test_query_videos_splits_more_than_20_ids(client: TikTokClient, emu: Emulator, alice: User) -> None:
    ids = [emu.add_video(alice.open_id, view_count=100 + i, like_count=i, comment_count=2 * i, share_count=3)
           for i in range(25)]
    bob = emu.add_user("bob-open-id")
    foreign = emu.add_video(bob.open_id, view_count=5)
    stats = await client.query_videos(alice.access_token, [*ids, foreign, ids[0]])
    assert len(emu.requests_to("video_query")) == 2  # 20 + 6 ids (the duplicate is sent once)
    assert sorted(s.id for s in stats) == sorted(ids)  # bob's video is not alice's to see
    by_id = {s.id: s for s in stats}
    assert (by_id[ids[7]].view_count, by_id[ids[7]].like_count, by_id[ids[7]].comment_count) == (107, 7, 14)
    share_url = by_id[ids[7]].share_url
    assert share_url is not None and share_url.endswith(f"/video/{ids[7]}")
    assert await client.query_videos(alice.access_token, []) == []
    assert len(emu.requests_to("video_query")) == 2


# --- the contract ------------------------------------------------------------------------------------


async def _ready_upload(client: TikTokClient, alice: User) -> tuple[InitResult, bytes]:
    data = video(3000)
    return await client.init_direct(alice.access_token, post(), chunk_plan(len(data))), data


async def _init(client: TikTokClient, alice: User) -> object:
    return await client.init_direct(alice.access_token, post(), chunk_plan(1000))


async def _status(client: TikTokClient, alice: User) -> object:
    init, data = await _ready_upload(client, alice)
    await client.upload_chunk(init.upload_url, data, 0, len(data) - 1, len(data))
    return await client.fetch_status(alice.access_token, init.publish_id)


async def _upload(client: TikTokClient, alice: User) -> object:
    init, data = await _ready_upload(client, alice)
    return await client.upload_chunk(init.upload_url, data, 0, len(data) - 1, len(data))


async def _creator(client: TikTokClient, alice: User) -> object:
    return await client.creator_info(alice.access_token)


async def _refresh(client: TikTokClient, alice: User) -> object:
    return await client.refresh_token(alice.refresh_token)


CONTRACT_BREAKS: list[tuple[str, str, Callable[[TikTokClient, User], Awaitable[object]], str]] = [
    ("init_direct", "drop:data.publish_id", _init, "data.publish_id"),
    ("init_direct", "set:data.upload_url=42", _init, "data.upload_url"),
    ("init_direct", "drop:error", _init, "error"),
    ("init_direct", "status:202", _init, "error.code"),
    ("creator_info", "drop:data.privacy_level_options", _creator, "data.privacy_level_options"),
    ("creator_info", 'set:data.comment_disabled="no"', _creator, "data.comment_disabled"),
    ("creator_info", "set:data.max_video_post_duration_sec=true", _creator, "data.max_video_post_duration_sec"),
    ("creator_info", "non_json", _creator, "body"),
    ("status", 'set:data.status="DONE"', _status, "data.status"),
    ("status", 'set:data.status="FAILED"', _status, "data.fail_reason"),
    ("status", 'set:data.publicaly_available_post_id=["x1"]', _status, "data.publicaly_available_post_id[0]"),
    ("status", 'set:data.uploaded_bytes="3000"', _status, "data.uploaded_bytes"),
    ("token", "drop:refresh_token", _refresh, "refresh_token"),
    ("token", 'set:token_type="mac"', _refresh, "token_type"),
    ("upload", "status:206", _upload, "status"),
    ("upload", "header:Content-Range=bytes 0-9/3000", _upload, "Content-Range"),
]


@pytest.mark.parametrize(("endpoint", "how", "call", "field"), CONTRACT_BREAKS,
                         ids=[f"{e}-{h}" for e, h, _, _ in CONTRACT_BREAKS])
async def test_an_answer_that_breaks_the_contract_names_the_field(
        client: TikTokClient, emu: Emulator, alice: User, endpoint: str, how: str,
        call: Callable[[TikTokClient, User], Awaitable[object]], field: str) -> None:
    emu.break_contract(endpoint, how)
    with pytest.raises(ContractViolation) as caught:
        await call(client, alice)
    assert caught.value.field == field and field in str(caught.value)


async def test_a_video_query_answer_with_a_missing_count_is_a_contract_violation(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    vid = emu.add_video(alice.open_id, view_count=3)
    emu.break_contract("video_query", "drop:data.videos.0.view_count")
    with pytest.raises(ContractViolation) as caught:
        await client.query_videos(alice.access_token, [vid])
    assert caught.value.field == "data.videos[0].view_count"


async def test_an_undocumented_error_code_with_http_200_is_a_contract_violation(
        client: TikTokClient, emu: Emulator, alice: User) -> None:
    emu.fail_next("creator_info", "mystery_code", http_status=200)
    with pytest.raises(ContractViolation) as caught:
        await client.creator_info(alice.access_token)
    assert caught.value.field == "error.code" and "mystery_code" in str(caught.value)
    emu.fail_next("creator_info", "mystery_code", http_status=400)  # with an error status it is TikTok's error
    with pytest.raises(TikTokError) as plain:
        await client.creator_info(alice.access_token)
    assert plain.value.code == "mystery_code" and not isinstance(plain.value, ContractViolation)


# --- the emulator is strict (so it would catch a client that is not) ----------------------------------


def _init_body(**post_info: Any) -> dict[str, Any]:
    info = {"title": "t", "privacy_level": PUBLIC, "brand_content_toggle": False, "brand_organic_toggle": False,
            "is_aigc": True, **post_info}
    return {"post_info": info, "source_info": {"source": "FILE_UPLOAD", "video_size": 1000, "chunk_size": 1000,
                                                "total_chunk_count": 1}}


JSON = "application/json; charset=UTF-8"
STRICT_CASES: list[tuple[str, bool, str, Any, int, str]] = [
    # (case, with a token, Content-Type, body, HTTP status, error.code)
    ("no token", False, JSON, _init_body(), 401, "access_token_invalid"),
    ("form content type", True, "application/x-www-form-urlencoded", _init_body(), 400, "invalid_param"),
    ("unknown field", True, JSON, _init_body(hashtags=["x"]), 400, "invalid_param"),
    ("is_aigc as text", True, JSON, _init_body(is_aigc="true"), 400, "invalid_param"),
    ("no brand toggle", True, JSON, {**_init_body(), "post_info": {"privacy_level": PUBLIC}}, 400, "invalid_param"),
    ("privacy level null", True, JSON, _init_body(privacy_level=None), 400, "invalid_param"),
    ("no privacy level", True, JSON,
     {**_init_body(), "post_info": {"brand_content_toggle": False, "brand_organic_toggle": False}},
     403, "privacy_level_option_mismatch"),
    ("chunk count", True, JSON, {**_init_body(), "source_info": {"source": "FILE_UPLOAD", "video_size": 11 * MB,
                                                                  "chunk_size": 5 * MB, "total_chunk_count": 3}},
     400, "invalid_param"),
    ("pull from url", True, JSON,
     {**_init_body(), "source_info": {"source": "PULL_FROM_URL", "video_url": "https://x"}},
     403, "url_ownership_unverified"),
]


@pytest.mark.parametrize(("case", "with_token", "content_type", "body", "status", "code"), STRICT_CASES,
                         ids=[c[0] for c in STRICT_CASES])
async def test_the_emulator_refuses_malformed_inits(emu: Emulator, alice: User, case: str, with_token: bool,
                                                     content_type: str, body: Any, status: int, code: str) -> None:
    headers = {"Content-Type": content_type}
    if with_token:
        headers["Authorization"] = f"Bearer {alice.access_token}"
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{emu.url}/v2/post/publish/video/init/", json=body, headers=headers)
    assert (resp.status_code, resp.json()["error"]["code"]) == (status, code)
    assert emu.inits == []
