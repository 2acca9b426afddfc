"""The review page (reelfab_publisher.web) over an in-memory desk: sessions (the cookie holds the desk's
session id, never the review token; logout and revocation end it), escaping, CSRF, the approve and reject
forms, hashtags, the video's byte ranges, takedowns."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape

from reelfab_publisher.desk import PUBLISHED, Takedown
from reelfab_publisher.web import SESSION_COOKIE, HashtagError, _Signer, parse_hashtags, review_app
from tests.review_page_support import T0, FakeDesk, make_item

SECRET = b"unit-test-secret-0123456789abcdef"
BASE = "/review"
HOSTILE_TITLE = "<script>alert(1)</script>"
HOSTILE_JOB = 'job"><img src=x onerror=alert(2)>'


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "final.mp4"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes: what the route serves is only bytes
    return path


@pytest.fixture
def desk(video: Path) -> FakeDesk:
    d = FakeDesk()
    d.add(make_item("job_b", minutes=5), video)
    d.add(make_item("job_a", minutes=0), video)
    d.add(make_item("job_old", minutes=-60, status=PUBLISHED, decided_by="bob", decided_at=T0,
                    account="main", post_id="post_9", share_url="javascript:alert(3)"))  # fmt: skip
    d.takedown_list["post_7"] = Takedown(
        post_id="post_7", job_id="job_gone", subject_id="subj_eve", account="main", platform="tiktok",
        requested_at=T0 + timedelta(minutes=30), reason="consent withdrawn",
    )  # fmt: skip
    return d


@pytest.fixture
async def client(desk: FakeDesk) -> AsyncIterator[httpx.AsyncClient]:
    async with page_client(desk) as c:
        yield c


def page_client(desk: FakeDesk) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=review_app(desk, secret=SECRET, base_path=BASE))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", follow_redirects=False)


async def login(client: httpx.AsyncClient, token: str = "tok-alice") -> None:
    response = await client.post(f"{BASE}/login", data={"token": token})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{BASE}/"


def job_url(job_id: str, action: str = "") -> str:
    return f"{BASE}/jobs/{quote(job_id, safe='')}" + (f"/{action}" if action else "")


def csrf_for(page: str, action: str) -> str:
    """The CSRF field of the form posting to ``action`` on a rendered page."""
    found = re.search(
        rf'action="{re.escape(html.escape(action))}"[^>]*>\s*<input type="hidden" name="csrf" value="([0-9a-f]+)"',
        page,
    )
    assert found, f"no form for {action} on the page"
    return found.group(1)


async def approve_form(client: httpx.AsyncClient, job_id: str = "job_a", **fields: str) -> dict[str, str]:
    page = (await client.get(job_url(job_id))).text
    form = {
        "csrf": csrf_for(page, job_url(job_id, "approve")),
        "title": "A dance for job_a",
        "hashtags": "dance fyp",
        "account": "main",
        "privacy_level": "FOLLOWER_OF_CREATOR",
        "cover_timestamp_ms": "1000",
        "consent": "yes",
    }
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


# --- sessions ---------------------------------------------------------------------------------------------


async def test_every_page_and_action_needs_a_session(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    for path in (f"{BASE}/", job_url("job_a"), f"{BASE}/takedowns"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith(f"{BASE}/login"), path
    assert (await client.get(job_url("job_a", "video"))).status_code == 401
    for path in (job_url("job_a", "approve"), job_url("job_a", "reject"), f"{BASE}/takedowns/post_7/done"):
        response = await client.post(path, data={"consent": "yes", "account": "main", "privacy_level": "SELF_ONLY",
                                           "reason": "x", "note": "x"})  # fmt: skip
        assert response.status_code == 401, path
    assert desk.approvals == [] and desk.rejections == [] and desk.takedowns_done == []


async def test_login_sets_a_strict_httponly_cookie_scoped_to_the_page(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{BASE}/login", data={"token": "tok-alice"})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert f"Path={BASE}" in cookie
    page = await client.get(f"{BASE}/")
    assert page.status_code == 200 and "alice" in page.text


def token_forms(token: str) -> list[str]:
    """The ways a token could hide in a cookie: as it came, base64, urlsafe base64, padded or not."""
    raw = token.encode()
    encoded = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    return [token, quote(token, safe=""), *encoded, *(e.rstrip("=") for e in encoded)]


@pytest.mark.parametrize("token", ["tok-alice", "tok+bob/with?odd=chars~", "x" * 300])
async def test_the_cookie_carries_a_session_id_never_the_token(desk: FakeDesk, token: str) -> None:
    desk.tokens[token] = "someone"
    async with page_client(desk) as client:
        response = await client.post(f"{BASE}/login", data={"token": token})
        assert response.status_code == 303, response.text
        cookie = response.headers["set-cookie"]
        value = client.cookies[SESSION_COOKIE]
        for form in token_forms(token):
            assert form not in cookie and form not in value, form
        [session_id] = desk.session_ids
        assert _Signer(SECRET).open_session(value) == session_id  # the desk's session id, signed
        assert token not in session_id
        assert (await client.get(f"{BASE}/")).status_code == 200


async def test_each_login_is_a_new_session(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    first = client.cookies[SESSION_COOKIE]
    async with page_client(desk) as other:
        await login(other)  # the same token in another browser: its own session
        assert other.cookies[SESSION_COOKIE] != first
        await login(client)  # this browser logs in again: its earlier session ends
        assert (await client.get(f"{BASE}/")).status_code == 200
        assert (await other.get(f"{BASE}/")).status_code == 200
    assert len(set(desk.session_ids)) == 3 and len(desk.sessions) == 2
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, first, path=BASE)
    assert (await client.get(f"{BASE}/")).status_code == 303


async def test_unknown_token_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{BASE}/login", data={"token": "tok-mallory"})
    assert response.status_code == 401
    assert "Unknown or revoked token" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await client.post(f"{BASE}/login", data={"token": ""})).status_code == 401


async def test_a_revoked_token_stops_working_at_once(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    assert (await client.get(f"{BASE}/")).status_code == 200
    form = await approve_form(client)
    desk.revoke("tok-alice")
    response = await client.get(f"{BASE}/")
    assert response.status_code == 303 and response.headers["location"] == f"{BASE}/login"
    assert (await client.post(job_url("job_a", "approve"), data=form)).status_code == 401
    assert (await client.get(job_url("job_a", "video"))).status_code == 401
    assert desk.approvals == [] and desk.sessions == {}  # revoking the token ended its session
    desk.tokens["tok-alice"] = "alice"  # the same token again does not bring the old session back
    assert (await client.get(f"{BASE}/")).status_code == 303


async def test_a_replaced_token_ends_its_sessions(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    saved = client.cookies[SESSION_COOKIE]
    desk.replace_token("tok-alice", "tok-alice-2")
    assert (await client.get(f"{BASE}/")).status_code == 303
    await login(client, "tok-alice-2")
    assert (await client.get(f"{BASE}/")).status_code == 200
    client.cookies.set(SESSION_COOKIE, saved, path=BASE)
    assert (await client.get(f"{BASE}/")).status_code == 303


async def test_a_cookie_that_held_the_token_is_no_session(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    """A cookie of the old format (the token in base64, signed as "session") does not open, even signed."""
    old = _Signer(SECRET)
    payload = f"{base64.urlsafe_b64encode(b'tok-alice').rstrip(b'=').decode()}.{int(T0.timestamp()) + 10**9}"
    client.cookies.set(SESSION_COOKIE, f"{payload}.{old.mac('session', payload)}", path=BASE)
    assert (await client.get(f"{BASE}/")).status_code == 303
    assert old.open_session(client.cookies[SESSION_COOKIE]) is None


async def test_a_forged_cookie_is_no_session(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    good = client.cookies[SESSION_COOKIE]
    encoded, issued, mac = good.split(".")
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, f"{encoded}.{issued}.{'0' * len(mac)}", path=BASE)
    assert (await client.get(f"{BASE}/")).status_code == 303
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, "tok-alice", path=BASE)
    assert (await client.get(f"{BASE}/")).status_code == 303


async def test_logout_forgets_the_session(client: httpx.AsyncClient) -> None:
    await login(client)
    page = (await client.get(f"{BASE}/")).text
    response = await client.post(f"{BASE}/logout", data={"csrf": csrf_for(page, f"{BASE}/logout")})
    assert response.status_code == 303
    assert (await client.get(f"{BASE}/")).status_code == 303


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(
    client: httpx.AsyncClient, desk: FakeDesk
) -> None:
    await login(client)
    saved = client.cookies[SESSION_COOKIE]  # what a thief (or a shared machine) kept
    page = (await client.get(job_url("job_a"))).text
    approve = await approve_form(client)
    reject_csrf = csrf_for(page, job_url("job_a", "reject"))
    response = await client.post(f"{BASE}/logout", data={"csrf": csrf_for(page, f"{BASE}/logout")})
    assert response.status_code == 303 and response.headers["location"] == f"{BASE}/login"
    assert (
        f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert desk.sessions == {}

    async with page_client(desk) as replay:
        replay.cookies.set(SESSION_COOKIE, saved, path=BASE)
        for path in (f"{BASE}/", job_url("job_a"), f"{BASE}/takedowns"):
            response = await replay.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith(f"{BASE}/login"), path
        assert (await replay.get(job_url("job_a", "video"))).status_code == 401
        assert (await replay.post(job_url("job_a", "approve"), data=approve)).status_code == 401
        reject = await replay.post(job_url("job_a", "reject"), data={"csrf": reject_csrf, "reason": "x"})
        assert reject.status_code == 401
        login_page = await replay.get(f"{BASE}/login")
        assert login_page.status_code == 200 and 'id="token"' in login_page.text  # not logged in
    assert desk.approvals == [] and desk.rejections == []


async def test_logout_needs_its_csrf_field(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    for data in ({}, {"csrf": "0" * 64}):
        response = await client.post(f"{BASE}/logout", data=data)
        assert response.status_code == 403
    assert (await client.get(f"{BASE}/")).status_code == 200  # a forged logout ends nothing
    assert len(desk.sessions) == 1


async def test_login_returns_to_the_page_asked_for_and_nowhere_else(client: httpx.AsyncClient) -> None:
    response = await client.get(job_url("job_a"))
    assert response.headers["location"] == f"{BASE}/login?next={job_url('job_a')}"
    page = (await client.get(response.headers["location"])).text
    assert f'name="next" value="{job_url("job_a")}"' in page
    response = await client.post(f"{BASE}/login", data={"token": "tok-alice", "next": job_url("job_a")})
    assert response.headers["location"] == job_url("job_a")
    for evil in ("//evil.example/x", "https://evil.example/", f"{BASE}/..//evil", "/elsewhere"):
        response = await client.post(f"{BASE}/login", data={"token": "tok-alice", "next": evil})
        assert response.headers["location"] == f"{BASE}/", evil


# --- pages ------------------------------------------------------------------------------------------------


async def test_queue_lists_waiting_videos_oldest_first_then_decided_and_takedowns(
    client: httpx.AsyncClient,
) -> None:
    await login(client)
    page = await client.get(f"{BASE}/")
    assert page.status_code == 200
    text = page.text
    waiting = text[text.index('id="waiting"') : text.index("</table>")]
    assert waiting.index("job_a") < waiting.index("job_b")
    assert "job_old" not in waiting
    assert "tpl_dance" in waiting and "subj_ada" in waiting and "3.0 s" in waiting
    assert "2026-03-01 09:00:00 UTC" in waiting
    recent = text[text.index('id="recent"') :]
    assert "job_old" in recent and "published" in recent and "bob" in recent
    assert 'href="javascript:' not in text  # a share URL that is not http(s) is text, not a link
    assert "<strong>1</strong> post to take down" in text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_empty_queue_says_so(desk: FakeDesk) -> None:
    desk.items.clear()
    desk.takedown_list.clear()
    client = page_client(desk)
    await login(client)
    text = (await client.get(f"{BASE}/")).text
    assert "Nothing is waiting for review." in text
    assert "No posts to take down." in text


async def test_hostile_job_ids_and_titles_are_escaped(
    client: httpx.AsyncClient, desk: FakeDesk, video: Path
) -> None:
    desk.add(make_item(HOSTILE_JOB, minutes=1, title=HOSTILE_TITLE, lineage={"model": "<b>bold</b>"}), video)
    await login(client)
    for path in (f"{BASE}/", job_url(HOSTILE_JOB)):
        text = (await client.get(path)).text
        assert HOSTILE_TITLE not in text and html.escape(HOSTILE_TITLE) in text, path
        assert "<img src=x" not in text, path
        assert str(escape(HOSTILE_JOB)) in text, path
    job_page = await client.get(job_url(HOSTILE_JOB))
    assert job_page.status_code == 200
    assert "<b>bold</b>" not in job_page.text and "&lt;b&gt;bold&lt;/b&gt;" in job_page.text
    assert f'src="{job_url(HOSTILE_JOB, "video")}"' in job_page.text.replace("&#34;", "%22")


async def test_job_page_offers_the_choices_without_defaults(client: httpx.AsyncClient) -> None:
    await login(client)
    page = await client.get(job_url("job_a"))
    assert page.status_code == 200
    text = page.text
    assert '<video id="player" controls muted playsinline' in text
    assert f'src="{job_url("job_a", "video")}"' in text
    privacy = text[
        text.index('<select id="privacy_level"') : text.index("</select>", text.index('id="privacy_level"'))
    ]
    assert '<option value="" disabled selected>' in privacy
    assert privacy.count(" selected") == 1  # only the placeholder: no default privacy level
    assert 'data-account="main"' in privacy and 'data-account="drafts"' in privacy
    assert 'data-account="broken"' not in privacy  # an account that cannot post offers nothing
    account = text[text.index('<select id="account"') : text.index("</select>", text.index('id="account"'))]
    assert re.search(r'value="broken" disabled', account)
    assert "no valid token: reconnect the account" in account
    assert 'data-comment-disabled="true"' in account
    assert 'name="consent" value="yes" required' in text
    assert "Labelled as AI-generated (is_aigc) — always" in text
    assert "inswapper_128" in text and "2027-01-01" in text and "ab" * 32 in text and "c2pa.created" in text
    assert 'maxlength="2200"' in text and "/ 2200 characters" in text


async def test_unknown_job_is_404_not_a_traceback(client: httpx.AsyncClient) -> None:
    await login(client)
    response = await client.get(job_url("job_nope"))
    assert response.status_code == 404
    assert "no job" in response.text and "Traceback" not in response.text


async def test_decided_job_shows_its_decision(client: httpx.AsyncClient) -> None:
    await login(client)
    text = (await client.get(job_url("job_old"))).text
    assert 'id="approve-form"' not in text
    assert "bob" in text and "post_9" in text and "published" in text


# --- approving and rejecting --------------------------------------------------------------------------------


async def test_approve_records_the_edited_approval_as_the_operator(
    client: httpx.AsyncClient, desk: FakeDesk
) -> None:
    await login(client)
    form = await approve_form(
        client, title="  A better title\r\nline two ", hashtags="#one, two  #three,, ##four"
    )
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{BASE}/"
    [(job_id, approval, actor)] = desk.approvals
    assert (job_id, actor) == ("job_a", "alice")
    assert approval.account == "main" and approval.privacy_level == "FOLLOWER_OF_CREATOR"
    assert approval.title == "A better title\nline two"
    assert approval.hashtags == ("one", "two", "three", "four")
    assert approval.disable_comment is True  # the creator turned comments off: forced
    assert approval.disable_duet is False and approval.brand_content_toggle is False
    queue = (await client.get(f"{BASE}/")).text
    assert "Approved job_a for Ada Dances (Followers)" in queue
    waiting = queue[queue.index('id="waiting"') : queue.index("</table>")]
    assert "job_a" not in waiting
    assert "Approved job_a" not in (await client.get(f"{BASE}/")).text  # the flash shows once


async def test_approve_without_consent_is_refused_before_the_desk(
    client: httpx.AsyncClient, desk: FakeDesk
) -> None:
    await login(client)
    form = await approve_form(client)
    del form["consent"]
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 400
    assert "I consent to post this video" in response.text and 'id="error"' in response.text
    assert desk.approvals == [] and desk.items["job_a"].status == "waiting"


async def test_approve_without_privacy_level_is_refused(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    response = await client.post(
        job_url("job_a", "approve"), data=await approve_form(client, privacy_level="")
    )
    assert response.status_code == 400
    assert "privacy level" in response.text and "no default" in response.text
    assert desk.approvals == []


async def test_a_privacy_level_the_account_does_not_offer_shows_the_desks_refusal(
    client: httpx.AsyncClient, desk: FakeDesk
) -> None:
    await login(client)
    form = await approve_form(
        client, account="drafts", privacy_level="PUBLIC_TO_EVERYONE", title="kept <i>title</i>"
    )
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 400
    assert "is not offered by account drafts" in html.unescape(response.text)
    assert "kept &lt;i&gt;title&lt;/i&gt;" in response.text  # the form keeps what was typed, escaped
    assert desk.approvals == []


async def test_approve_refuses_an_overlong_title_and_private_branded_content(
    client: httpx.AsyncClient, desk: FakeDesk
) -> None:
    await login(client)
    response = await client.post(
        job_url("job_a", "approve"), data=await approve_form(client, title="x" * 2201)
    )
    assert response.status_code == 400 and "at most 2200" in response.text
    form = await approve_form(client, privacy_level="SELF_ONLY", brand_content_toggle="on")
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 400 and "Branded content" in response.text
    assert desk.approvals == []


async def test_approving_a_decided_job_shows_why_not(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    form = await approve_form(client)
    assert (await client.post(job_url("job_a", "approve"), data=form)).status_code == 303
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 400
    assert "not waiting" in response.text and "Traceback" not in response.text
    assert len(desk.approvals) == 1


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "other-job", "other-session", "from-the-token"])
async def test_csrf_missing_or_wrong_is_403(
    client: httpx.AsyncClient, desk: FakeDesk, csrf: str | None
) -> None:
    await login(client)
    form = await approve_form(client)
    if csrf is None:
        del form["csrf"]
    elif csrf == "other-job":
        form["csrf"] = (await approve_form(client, "job_b"))["csrf"]
    elif csrf == "other-session":
        desk.tokens["tok-bob"] = "bob"
        other = page_client(desk)
        await login(other, "tok-bob")
        form["csrf"] = (await approve_form(other))["csrf"]
    elif csrf == "from-the-token":  # as the page derived it when the cookie held the token
        form["csrf"] = _Signer(SECRET).csrf("tok-alice", "approve:job_a")
    else:
        form["csrf"] = csrf
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 403
    assert desk.approvals == []
    reject = await client.post(
        job_url("job_a", "reject"),
        data={"reason": "no", **({"csrf": form["csrf"]} if "csrf" in form else {})},
    )
    assert reject.status_code == 403 and desk.rejections == []


async def test_reject_needs_a_reason(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    page = (await client.get(job_url("job_b"))).text
    csrf = csrf_for(page, job_url("job_b", "reject"))
    response = await client.post(job_url("job_b", "reject"), data={"csrf": csrf, "reason": "   "})
    assert response.status_code == 400 and "reason is required" in response.text
    assert desk.rejections == []
    response = await client.post(
        job_url("job_b", "reject"), data={"csrf": csrf, "reason": "the face flickers"}
    )
    assert response.status_code == 303
    assert desk.rejections == [("job_b", "the face flickers", "alice")]
    assert "Rejected job_b." in (await client.get(f"{BASE}/")).text
    assert "the face flickers" in (await client.get(job_url("job_b"))).text


# --- the video ----------------------------------------------------------------------------------------------


async def test_video_is_served_with_ranges(client: httpx.AsyncClient, video: Path) -> None:
    await login(client)
    whole = await client.get(job_url("job_a", "video"))
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["cache-control"] == "no-store"
    assert whole.content == video.read_bytes()
    part = await client.get(job_url("job_a", "video"), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{video.stat().st_size}"
    assert part.content == video.read_bytes()[100:200]
    assert part.headers["cache-control"] == "no-store"


async def test_video_of_an_unknown_job_is_404(
    client: httpx.AsyncClient, desk: FakeDesk, tmp_path: Path
) -> None:
    await login(client)
    assert (await client.get(job_url("job_nope", "video"))).status_code == 404
    desk.add(make_item("job_novideo"))
    assert (await client.get(job_url("job_novideo", "video"))).status_code == 404
    desk.add(make_item("job_gone_file"), tmp_path / "missing.mp4")
    assert (await client.get(job_url("job_gone_file", "video"))).status_code == 404


# --- takedowns ----------------------------------------------------------------------------------------------


async def test_takedown_queue_and_marking_one_done(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    page = await client.get(f"{BASE}/takedowns")
    assert page.status_code == 200
    assert "post_7" in page.text and "subj_eve" in page.text and "consent withdrawn" in page.text
    action = f"{BASE}/takedowns/post_7/done"
    csrf = csrf_for(page.text, action)
    assert (await client.post(action, data={"csrf": csrf, "note": " "})).status_code == 400
    assert (await client.post(action, data={"note": "deleted"})).status_code == 403
    assert desk.takedowns_done == []
    response = await client.post(action, data={"csrf": csrf, "note": "deleted in the app"})
    assert response.status_code == 303 and response.headers["location"] == f"{BASE}/takedowns"
    assert desk.takedowns_done == [("post_7", "alice", "deleted in the app")]
    after = (await client.get(f"{BASE}/takedowns")).text
    assert "Takedown of post post_7 marked done." in after and "No posts to take down." in after
    done = (await client.get(f"{BASE}/takedowns?done=1")).text
    row = done[done.index('data-post="post_7"') : done.index("</tr>", done.index('data-post="post_7"'))]
    assert "2026-03-01 10:00:00 UTC" in row and "alice" in row  # when, and who
    assert '<p class="takedown-note">deleted in the app</p>' in row and "<form" not in row


async def test_a_takedown_note_is_shown_escaped(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    action = f"{BASE}/takedowns/post_7/done"
    csrf = csrf_for((await client.get(f"{BASE}/takedowns")).text, action)
    note = "gone <script>alert(4)</script>"
    assert (await client.post(action, data={"csrf": csrf, "note": note})).status_code == 303
    assert desk.takedown_list["post_7"].note == note
    done = (await client.get(f"{BASE}/takedowns?done=1")).text
    assert "<script>alert(4)" not in done and html.escape(note, quote=False) in done


async def test_unknown_takedown_is_404(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    session_id = _Signer(SECRET).open_session(client.cookies[SESSION_COOKIE])
    assert session_id is not None
    csrf = _Signer(SECRET).csrf(session_id, "takedown:post_nope")
    response = await client.post(f"{BASE}/takedowns/post_nope/done", data={"csrf": csrf, "note": "gone"})
    assert response.status_code == 404 and "post_nope" in response.text


# --- odds and ends ----------------------------------------------------------------------------------------


async def test_static_files_and_unknown_paths(client: httpx.AsyncClient) -> None:
    css = await client.get(f"{BASE}/static/review.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (
        (await client.get(f"{BASE}/static/review.js")).headers["content-type"].startswith("text/javascript")
    )
    assert (await client.get(f"{BASE}/static/../web.py")).status_code == 404
    assert (await client.get(f"{BASE}/static/nothing.css")).status_code == 404
    assert (await client.get(f"{BASE}/nowhere")).status_code == 404
    assert (await client.get(BASE)).headers["location"] == f"{BASE}/"


async def test_a_failing_desk_gives_an_error_page_not_a_traceback(desk: FakeDesk) -> None:
    async def broken() -> list[object]:
        raise RuntimeError("database is down: secret detail")

    app = review_app(desk, secret=SECRET)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", follow_redirects=False
    ) as c:
        await login(c)
        desk.waiting = broken  # type: ignore[method-assign,assignment]
        response = await c.get(f"{BASE}/")
    assert response.status_code == 500
    assert "The review desk failed" in response.text
    assert "secret detail" not in response.text and "Traceback" not in response.text


async def test_an_oversized_form_is_refused(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    form = await approve_form(client, title="x" * 300_000)
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 413
    assert desk.approvals == []


def test_parse_hashtags() -> None:
    assert parse_hashtags("") == ()
    assert parse_hashtags(" #a,b  c\n#a ,, # ") == ("a", "b", "c")
    assert parse_hashtags("#ダンス #música, 舞蹈_2026 #x" + "y" * 99) == (
        "ダンス",
        "música",
        "舞蹈_2026",
        "x" + "y" * 99,
    )


@pytest.mark.parametrize(
    "bad",
    ["<b>x</b>", '"onmouseover=alert(1)', "a#b", "x" * 101, "don't", "fyp!", "a-b", "🎉", "a\x00b", "#<i>"],
)
def test_parse_hashtags_refuses_anything_but_word_characters(bad: str) -> None:
    with pytest.raises(HashtagError) as refused:
        parse_hashtags(f"dance {bad} fyp")
    shown = bad.lstrip("#")
    assert (shown if len(shown) <= 40 else shown[:40]) in str(refused.value)
    assert "letters, digits or underscores" in str(refused.value)


@pytest.mark.parametrize("bad", ["<b>x</b>", '"onmouseover=alert(1)', "#a#b", "tag," + "z" * 101])
async def test_hostile_hashtags_are_refused_before_the_desk(
    client: httpx.AsyncClient, desk: FakeDesk, bad: str
) -> None:
    await login(client)
    form = await approve_form(client, hashtags=f"#dance {bad}")
    response = await client.post(job_url("job_a", "approve"), data=form)
    assert response.status_code == 400
    error = response.text[
        response.text.index('id="error"') : response.text.index("</p>", response.text.index('id="error"'))
    ]
    named = bad.split(",")[-1].lstrip("#")
    assert html.escape(named[:40], quote=False) in error.replace("&#34;", '"').replace("&#39;", "'")
    assert "letters, digits or underscores" in error
    assert "<b>x</b>" not in response.text and '"onmouseover' not in response.text
    assert desk.approvals == [] and desk.items["job_a"].status == "waiting"


async def test_hashtags_of_any_script_are_approved(client: httpx.AsyncClient, desk: FakeDesk) -> None:
    await login(client)
    form = await approve_form(client, hashtags="#ダンス #música_2026")
    assert (await client.post(job_url("job_a", "approve"), data=form)).status_code == 303
    [(_, approval, _)] = desk.approvals
    assert approval.hashtags == ("ダンス", "música_2026")


def test_a_short_secret_is_refused(desk: FakeDesk) -> None:
    with pytest.raises(ValueError):
        review_app(desk, secret=b"short")


async def test_a_video_back_for_review_says_why_on_the_queue_and_its_page(client: httpx.AsyncClient,
                                                                           desk: FakeDesk, video: Path) -> None:
    desk.add(make_item("job_back", minutes=10, reason="the app is <not> audited: approve it again as SELF_ONLY"),
             video)
    await login(client)
    queue = (await client.get(f"{BASE}/")).text
    row = queue[queue.index('data-job="job_back"'):]
    assert "back for review: the app is &lt;not&gt; audited" in row[: row.index("</tr>")]
    page = (await client.get(job_url("job_back"))).text
    assert 'id="returned-reason"' in page and "approve it again as SELF_ONLY" in page
    plain = (await client.get(job_url("job_a"))).text
    assert 'id="returned-reason"' not in plain
