"""Posting an approved video, at most once. Each call of ``advance`` moves one claimed job one step:

  approved  --consent + file check, creator_info, init (publish_id persisted)-->  posting
  posting   --chunks uploaded in order, progress persisted after each-->  upload done
  upload done  --status/fetch, throttled-->  published (publish.completed) | failed (job.failed) | in_inbox

Exactly once: the job's row is the only record of its progress and it is written before the next step
starts. A restart (or a redelivered render.completed, which finds the row there) resumes: with a
publish_id and an unfinished upload it asks the platform how many bytes it holds and continues from
there; with the upload done it only fetches the status. A new init happens only when the old upload
can no longer complete (its URL expired): a FILE_UPLOAD becomes a post only once all its bytes arrive,
so an abandoned init posts nothing. Every consent check happens before bytes leave."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reelfab.bus import new_event_id
from reelfab.contracts.generated.records import JobFailed, PublishCompleted
from reelfab.contracts.topics import JOB_FAILED, PUBLISH_COMPLETED
from reelfab.errors import StoreUnavailable
from reelfab.logging import get_logger
from reelfab.storage import sha256_file

from . import metrics
from .accounts import NoValidToken, account_problem
from .bootstrap import Publisher
from .chunks import MAX_VIDEO_SIZE, ChunkPlan, chunk_plan
from .desk import APPROVED, FAILED, IN_INBOX, POSTING, PUBLISHED, STOPPED, WAITING
from .post_rules import STRIKE, backoff_s, caption, fail_reason_code
from .tiktok_api import (
    ContractViolation,
    PostInfo,
    PrivacyLevelMismatch,
    PublishStatus,
    RateLimited,
    SpamRisk,
    TikTokError,
    UnauditedClient,
    UnknownPublish,
    UploadRefused,
)

log = get_logger("reelfab.publisher")
PURPOSE = "publish"
VERIFY_AFTER_S = 30.0  # a stopped upload's outcome is asked this long after the stop (a chunk in flight lands)


@dataclass(frozen=True)
class Wait(Exception):
    """Nothing wrong with the job: it waits (``until``) for something outside it (``why``)."""

    why: str
    until: datetime


@dataclass(frozen=True)
class BackToReview(Exception):
    """The approval cannot be carried out as given (the account no longer offers that privacy level, an
    unaudited app): the video goes back to the queue, with why, for an operator to decide again."""

    code: str
    detail: str


@dataclass(frozen=True)
class Fail(Exception):
    """The job ends here: job.failed with ``code`` and ``detail``; ``status`` failed or stopped."""

    code: str
    detail: str
    status: str = FAILED
    retryable: bool = False


async def advance(p: Publisher, job_id: str) -> str | None:
    """One step of a claimed job; returns its status afterwards (None: not the poster's to move)."""
    row = await p.repo.review(job_id)
    if row is None or row["status"] not in (APPROVED, POSTING, IN_INBOX):
        return None
    try:
        if not row["upload_done"]:
            await _upload(p, row)
        else:
            await _poll(p, row)
    except Wait as w:
        await p.repo.update_review(None, job_id, next_attempt_at=w.until, waiting_for=w.why)
        log.info("post waits", job_id=job_id, why=w.why, until=w.until.isoformat())
    except Fail as f:
        await _finish_failed(p, row, f)
    except BackToReview as b:
        await back_to_review(p, row, b)
    except (ContractViolation, TikTokError, OSError, StoreUnavailable) as exc:  # the platform or the disk
        await _retry_later(p, row, exc)
    now = await p.repo.review(job_id)
    return now["status"] if now else None


# ------------------------------------------------------------------------------ upload


async def _upload(p: Publisher, row: dict[str, Any]) -> None:
    job_id = row["job_id"]
    await _consent(p, row)  # before any byte leaves, every attempt
    path = await asyncio.to_thread(_verified_file, p, row)
    account = await p.repo.account(row["account"]) if row["account"] else None
    if account is None:
        raise BackToReview("account_missing", f"the approved account {row['account']!r} no longer exists; "
                                              "approve it again with another")
    problem = account_problem(account, p.clock())
    if problem is not None:
        raise Wait(problem, _later(p, account.paused_until))
    if account.platform == "dryrun":
        await _post_dryrun(p, row, path)
        return
    if p.client is None:
        raise Wait("no TikTok client configured (REELFAB_TIKTOK_CLIENT_KEY, REELFAB_TIKTOK_CLIENT_SECRET)", _later(p))
    try:
        await _upload_tiktok(p, row, account.name, account.mode, account.self_only, path)
    except NoValidToken as exc:
        raise Wait(f"no valid token: {exc}", _later(p)) from None
    log.info("uploaded", job_id=job_id, account=account.name)


def _verified_file(p: Publisher, row: dict[str, Any]) -> Any:
    try:
        path = p.store.local_path(row["final_uri"])
    except Exception as exc:  # noqa: BLE001 - a URI this store does not serve: the render is unusable
        raise Fail("render_missing", f"the rendered file {row['final_uri']} cannot be read here: {exc}") from None
    if not path.is_file():
        raise Fail("render_missing", f"the rendered file {row['final_uri']} is missing; nothing was uploaded")
    actual = sha256_file(path)
    if actual != row["final_sha256"]:
        raise Fail("render_sha256_mismatch", f"the rendered file {row['final_uri']} has sha256 {actual}, "
                                             f"not the announced {row['final_sha256']}; nothing was uploaded")
    return path


async def _consent(p: Publisher, row: dict[str, Any]) -> None:
    commercial = True if row["commercial"] is None else bool(row["commercial"])
    decision = await p.gate.check(subject=row["subject_id"], purpose=PURPOSE, platform=row["platform"],
                                  tags=tuple(row["template_tags"]), commercial=commercial, ask_registry=True,
                                  job_id=row["job_id"])
    if not decision.allowed:
        metrics.CONSENT_STOPS.labels(decision.reason).inc()
        raise Fail(f"consent.{decision.reason}", f"{decision.detail}; nothing was uploaded", status=STOPPED)


def _post_info(p: Publisher, row: dict[str, Any]) -> PostInfo:
    options = row["post_options"] or {}
    c = caption(row["title"], row["hashtags"])
    if c.trimmed:
        log.warning("caption trimmed to the platform's limit", job_id=row["job_id"],
                    dropped_hashtags=list(c.dropped_hashtags))
    return PostInfo(
        title=c.text, privacy_level=row["privacy_level"],
        disable_comment=bool(options.get("disable_comment")), disable_duet=bool(options.get("disable_duet")),
        disable_stitch=bool(options.get("disable_stitch")),
        video_cover_timestamp_ms=int(options.get("cover_timestamp_ms", 1000)),
        brand_content_toggle=bool(options.get("brand_content_toggle")),
        brand_organic_toggle=bool(options.get("brand_organic_toggle")),
    )


async def _post_dryrun(p: Publisher, row: dict[str, Any], path: Any) -> None:
    info = _post_info(p, row)
    post = await asyncio.to_thread(
        p.dryrun.publish, job_id=row["job_id"], video=path, sha256=row["final_sha256"], account=row["account"],
        post_info={**info.__dict__, "is_aigc": True}, lineage=_lineage(row))
    await _published(p, row, post.post_id, post.share_url, post.published_at, dry_run=True, readable=True)


async def _upload_tiktok(p: Publisher, row: dict[str, Any], account: str, mode: str, self_only: bool,
                         path: Any) -> None:
    assert p.client is not None
    client = p.client
    job_id = row["job_id"]
    start = 0
    if row["publish_id"] and row["upload_url"] and not _expired(p, row):
        # a restart mid-upload: the platform says how much it holds
        try:
            status = await p.tokens.call(account, lambda t: client.fetch_status(t, row["publish_id"]))
        except UnknownPublish:  # the platform never kept it: nothing was posted under it, initialise again
            await p.repo.update_review(None, job_id, upload_url=None, chunks_done=0)
            raise Wait("the platform does not know the unfinished upload; initialising again", p.clock()) from None
        if status.status != "PROCESSING_UPLOAD" or status.uploaded_bytes == row["video_size"]:
            # it has every byte already: only the status is left
            await p.repo.update_review(None, job_id, upload_done=True, chunks_done=row["total_chunks"],
                                       next_attempt_at=p.clock(), waiting_for=None)
            return
        start = _resume_chunk(row, status)
    else:
        if row["publish_id"]:  # its upload URL expired before the bytes went: that init posts nothing
            log.warning("upload URL expired; initialising again (the old upload never completed)",
                        job_id=job_id, publish_id=row["publish_id"])
        await _init(p, row, account, mode, self_only, path)
        row = await p.repo.review(job_id) or row
    plan_ranges = ChunkPlan(row["video_size"], row["chunk_size"], row["total_chunks"]).ranges()  # as initialised
    total = row["video_size"]
    with path.open("rb") as f:
        for index in range(start, len(plan_ranges)):
            withdrawn = p.view.withdrawn(row["subject_id"])  # a revocation stops an upload between chunks
            if withdrawn is not None:
                raise Fail(f"consent.{withdrawn[0]}", f"{withdrawn[1]}; the upload stopped after {index} chunk(s)",
                           status=STOPPED)
            current = await p.repo.review(job_id)
            if current is None or current["status"] not in (APPROVED, POSTING):  # stopped meanwhile
                raise Fail(current["reason_code"] if current else "gone", "the job ended while it uploaded",
                           status=STOPPED)
            if index == len(plan_ranges) - 1:
                await _consent(p, row)  # the last chunk makes the post: the registry's word right before it
            first, last = plan_ranges[index]
            f.seek(first)
            data = f.read(last - first + 1)
            try:
                complete = await client.upload_chunk(row["upload_url"], data, first, last, total)
            except UploadRefused as exc:
                # the URL expired or the platform lost track: a fresh init is safe (nothing was posted)
                await p.repo.update_review(None, job_id, upload_url=None, chunks_done=0)
                raise Wait(f"upload refused ({exc.code}); initialising again", p.clock()) from None
            await p.repo.update_review(None, job_id, chunks_done=index + 1, upload_done=complete,
                                       claimed_until=p.clock() + timedelta(seconds=p.claim_lease_s))
            metrics.UPLOADED_BYTES.inc(len(data))
            if p.after_chunk is not None:
                await p.after_chunk(job_id, index)
    current = await p.repo.review(job_id)
    if current is not None and current["status"] == POSTING:  # (a job stopped meanwhile keeps its check time)
        await p.repo.update_review(None, job_id, upload_done=True, next_attempt_at=p.clock(), waiting_for=None)


async def _init(p: Publisher, row: dict[str, Any], account: str, mode: str, self_only: bool, path: Any) -> None:
    assert p.client is not None
    client = p.client
    size = path.stat().st_size
    if size > MAX_VIDEO_SIZE:
        raise Fail("video_too_large", f"the video is {size} bytes; TikTok takes at most {MAX_VIDEO_SIZE} (4 GB)")
    plan = chunk_plan(size, preferred_chunk_size=p.settings.publisher_chunk_mb * 1024 * 1024)
    if mode == "inbox":
        init = await p.tokens.call(account, lambda t: client.init_inbox(t, plan))
    else:
        info = await p.tokens.call(account, client.creator_info)  # first, every time: options change
        offered = tuple(o for o in info.privacy_level_options if not self_only or o == "SELF_ONLY")
        if row["privacy_level"] not in offered:
            raise BackToReview("privacy_level_not_offered",
                               f"the account no longer offers {row['privacy_level']} (offers "
                               f"{', '.join(offered) or 'none'}); approve it again with one of those")
        if row["duration_s"] > info.max_video_post_duration_sec + 0.05:
            raise Fail("video_too_long", f"the video lasts {row['duration_s']:.1f} s; the account may post at most "
                                         f"{info.max_video_post_duration_sec} s")
        post = _post_info(p, row)
        post = PostInfo(**{**post.__dict__, "disable_comment": post.disable_comment or info.comment_disabled,
                           "disable_duet": post.disable_duet or info.duet_disabled,
                           "disable_stitch": post.disable_stitch or info.stitch_disabled})
        try:
            init = await p.tokens.call(account, lambda t: client.init_direct(t, post, plan))
        except PrivacyLevelMismatch as exc:
            raise BackToReview("privacy_level_not_offered",
                               f"the platform refused the privacy level: {exc.message}; approve it again") from None
    abandoned = [*row["abandoned_publish_ids"], row["publish_id"]] if row["publish_id"] else row["abandoned_publish_ids"]
    await p.repo.update_review(
        None, row["job_id"], status=POSTING, publish_id=init.publish_id, upload_url=init.upload_url,
        upload_started_at=p.clock(), video_size=plan.video_size, chunk_size=plan.chunk_size,
        total_chunks=plan.total_chunk_count, chunks_done=0, upload_done=False, abandoned_publish_ids=abandoned)
    await p.repo.audit(None, row["job_id"], "publisher", "initialised",
                       {"publish_id": init.publish_id, "account": account, "mode": mode, "video_size": size,
                        "chunks": plan.total_chunk_count})
    if p.after_init is not None:
        await p.after_init(row["job_id"])


def _resume_chunk(row: dict[str, Any], status: PublishStatus) -> int:
    """The chunk to send next: after the bytes the platform says it holds (our own count may be one
    behind when the process died between a chunk's answer and its row update)."""
    if status.uploaded_bytes is None:
        return int(row["chunks_done"])
    plan = ChunkPlan(row["video_size"], row["chunk_size"], row["total_chunks"])
    try:
        return plan.resume_index(status.uploaded_bytes)
    except ValueError:
        return int(row["chunks_done"])


def _expired(p: Publisher, row: dict[str, Any]) -> bool:
    started = row["upload_started_at"]
    return started is None or p.clock() - started > timedelta(seconds=p.settings.publisher_upload_url_ttl_s)


# ------------------------------------------------------------------------------ status


async def _poll(p: Publisher, row: dict[str, Any]) -> None:
    assert p.client is not None, "an uploaded TikTok post needs the client to follow it"
    client = p.client
    try:
        status = await p.tokens.call(row["account"], lambda t: client.fetch_status(t, row["publish_id"]))
    except NoValidToken as exc:
        raise Wait(f"no valid token: {exc}", _later(p)) from None
    now = p.clock()
    if status.status == "PUBLISH_COMPLETE":
        post_id = status.post_ids[0] if status.post_ids else row["publish_id"]
        await _published(p, row, post_id, None, now, dry_run=False, readable=bool(status.post_ids))
        return
    if status.status == "FAILED":
        code = fail_reason_code(status.fail_reason)
        if code == STRIKE:
            await _pause(p, row["account"], f"the platform failed a post for spam risk ({status.fail_reason})")
        raise Fail(code, f"the platform failed the post: {status.fail_reason or 'no reason given'}",
                   retryable=code == STRIKE)
    started = row["upload_started_at"] or now
    if status.status == "SEND_TO_USER_INBOX":
        if row["status"] != IN_INBOX:
            await p.repo.update_review(None, row["job_id"], status=IN_INBOX)
            await p.repo.audit(None, row["job_id"], "publisher", "sent_to_inbox", {"publish_id": row["publish_id"]})
        if now - started > timedelta(seconds=p.settings.publisher_inbox_timeout_s):
            raise Fail("inbox_draft_not_posted", "the creator did not post the draft from the inbox in time")
        raise Wait("the draft waits in the creator's inbox",
                   now + timedelta(seconds=p.settings.publisher_inbox_poll_s))
    if now - started > timedelta(seconds=p.settings.publisher_status_timeout_s):
        raise Fail("platform_timeout", f"the platform still says {status.status} after "
                                       f"{p.settings.publisher_status_timeout_s:.0f} s", retryable=True)
    raise Wait(f"the platform is processing the post ({status.status})",
               now + timedelta(seconds=p.settings.publisher_status_poll_s))


# ------------------------------------------------------------------------------ outcomes


async def _published(p: Publisher, row: dict[str, Any], post_id: str, share_url: str | None, at: datetime, *,
                     dry_run: bool, readable: bool) -> None:
    record = PublishCompleted(
        event_id=new_event_id(), occurred_at=p.clock(), producer=p.spec.name, trace_id=row["trace_id"],
        job_id=row["job_id"], subject_id=row["subject_id"], consent_version=row["consent_version"],
        platform=row["platform"] if not dry_run else "dryrun", post_id=post_id, account=row["account"],
        published_at=at, privacy_level=row["privacy_level"], dry_run=dry_run, share_url=share_url,
        template_id=row["template_id"], arm_id=row["arm_id"],
    )
    async with p.pool.acquire() as conn, conn.transaction():
        current = await p.repo.review(row["job_id"], conn, lock=True)
        if current is None or current["status"] == PUBLISHED:
            return
        await p.repo.update_review(conn, row["job_id"], status=PUBLISHED, post_id=post_id, share_url=share_url,
                                   published_at=at, waiting_for=None, next_attempt_at=None)
        await p.repo.add_post(conn, {
            "post_id": post_id, "job_id": row["job_id"], "platform": record.platform, "account": row["account"],
            "dry_run": dry_run, "subject_id": row["subject_id"], "template_id": row["template_id"],
            "arm_id": row["arm_id"], "duration_s": row["duration_s"], "published_at": at, "readable": readable})
        await p.repo.audit(conn, row["job_id"], "publisher", "published",
                           {"post_id": post_id, "account": row["account"], "dry_run": dry_run})
        await p.outbox.add(conn, PUBLISH_COMPLETED, record)
    metrics.POSTS.labels(record.platform).inc()
    log.info("published", job_id=row["job_id"], post_id=post_id, account=row["account"], dry_run=dry_run)


async def _finish_failed(p: Publisher, row: dict[str, Any], f: Fail) -> None:
    record = JobFailed(
        event_id=new_event_id(), occurred_at=p.clock(), producer=p.spec.name, trace_id=row["trace_id"],
        job_id=row["job_id"], stage=p.spec.name, reason_code=f.code, reason=f.detail[:2000],
        retryable=f.retryable, attempts=row["attempts"] + 1, subject_id=row["subject_id"],
        consent_version=row["consent_version"],
    )
    await fail_in_tx(p, row["job_id"], record, f.status)
    log.warning("post failed", job_id=row["job_id"], reason=f.code, detail=f.detail)


async def fail_in_tx(p: Publisher, job_id: str, record: JobFailed, status: str, conn: Any = None) -> bool:
    """The job ends (failed or stopped) with job.failed announced in the same transaction; False when it
    had ended already."""
    async def go(c: Any) -> bool:
        current = await p.repo.review(job_id, c, lock=True)
        if current is None or current["status"] in (PUBLISHED, FAILED, STOPPED) or current["status"] == "rejected":
            return False
        # stopped with bytes possibly gone (a chunk in flight cannot be recalled): ask the platform later
        verify = status == STOPPED and current["publish_id"] is not None
        await p.repo.update_review(c, job_id, status=status, reason=record.reason, reason_code=record.reason_code,
                                   waiting_for=None, verify_post=verify,
                                   next_attempt_at=p.clock() + timedelta(seconds=VERIFY_AFTER_S) if verify else None)
        await p.repo.audit(c, job_id, "publisher", status, {"reason_code": record.reason_code, "reason": record.reason})
        await p.outbox.add(c, JOB_FAILED, record)
        return True

    if conn is not None:
        return await go(conn)
    async with p.pool.acquire() as c, c.transaction():
        done = await go(c)
    if done:
        metrics.FAILURES.labels(record.reason_code).inc()
    return done


async def back_to_review(p: Publisher, row: dict[str, Any], b: BackToReview) -> None:
    async with p.pool.acquire() as conn, conn.transaction():
        current = await p.repo.review(row["job_id"], conn, lock=True)
        if current is None or current["status"] not in (APPROVED, POSTING):
            return
        abandoned = [*current["abandoned_publish_ids"], current["publish_id"]] if current["publish_id"] \
            else current["abandoned_publish_ids"]
        await p.repo.update_review(
            conn, row["job_id"], status=WAITING, reason=b.detail, reason_code=b.code, account=None, privacy_level=None,
            decided_by=None, decided_at=None, publish_id=None, upload_url=None, upload_started_at=None, chunks_done=0,
            upload_done=False, abandoned_publish_ids=abandoned, waiting_for=None, next_attempt_at=None, attempts=0)
        await p.repo.audit(conn, row["job_id"], "publisher", "returned_to_review", {"code": b.code, "reason": b.detail})
    log.warning("back to review", job_id=row["job_id"], reason=b.code, detail=b.detail)


async def verify_stopped(p: Publisher, row: dict[str, Any]) -> str:
    """A job stopped by a withdrawal while its bytes went up: did the platform make the post anyway (the
    last chunk was in flight)? A post goes to the takedown queue. Returns what was found."""
    job_id, account = row["job_id"], row["account"]
    client = p.client

    async def done(found: str, **detail: Any) -> str:
        await p.repo.update_review(None, job_id, verify_post=False, next_attempt_at=None)
        await p.repo.audit(None, job_id, "publisher", f"withdrawal_check_{found}", detail)
        return found

    if client is None or account is None or await p.repo.account(account) is None:
        return await done("unverifiable", why="no TikTok client or account to ask")
    try:
        status = await p.tokens.call(account, lambda t: client.fetch_status(t, row["publish_id"]))
    except (NoValidToken, TikTokError) as exc:
        await p.repo.update_review(None, job_id, next_attempt_at=p.clock() + timedelta(seconds=60))
        log.warning("cannot ask whether a stopped upload was posted; asking again", job_id=job_id, error=str(exc)[:300])
        return "later"
    if status.status in ("PUBLISH_COMPLETE", "SEND_TO_USER_INBOX"):
        post_id = status.post_ids[0] if status.post_ids else row["publish_id"]
        what = "a post" if status.status == "PUBLISH_COMPLETE" else "a draft in the creator's inbox"
        async with p.pool.acquire() as conn, conn.transaction():
            await p.repo.add_takedowns(conn, [{
                "post_id": post_id, "job_id": job_id, "subject_id": row["subject_id"], "account": account,
                "platform": row["platform"],
                "reason": f"{what} made while its consent was withdrawn ({row['reason_code']}; the last chunk "
                          "was in flight)"}])
            await p.repo.update_review(conn, job_id, post_id=post_id, reason=(
                f"{row['reason_code']}: stopped while uploading, but the platform made {what} anyway ({post_id}): "
                "it is in the takedown queue"))
        metrics.POSTED_DESPITE_WITHDRAWAL.inc()
        log.error("posted while its consent was withdrawn: queued for takedown", job_id=job_id, post_id=post_id)
        return await done("posted", post_id=post_id, status=status.status)
    settled = f"{row['reason_code']}: stopped while uploading; the platform confirmed nothing was posted"
    if status.status == "FAILED":
        await p.repo.update_review(None, job_id, reason=settled)
        return await done("not_posted", status=status.status, fail_reason=status.fail_reason)
    incomplete = status.status == "PROCESSING_UPLOAD" and (status.uploaded_bytes or 0) < (row["video_size"] or 0)
    if incomplete and _expired(p, row):  # its URL is dead: the missing bytes can never come
        await p.repo.update_review(None, job_id, reason=settled)
        return await done("not_posted", status=status.status, uploaded_bytes=status.uploaded_bytes)
    await p.repo.update_review(None, job_id, next_attempt_at=p.clock() + timedelta(
        seconds=300 if incomplete else p.settings.publisher_status_poll_s))
    return "later"


async def _retry_later(p: Publisher, row: dict[str, Any], exc: Exception) -> None:
    job_id = row["job_id"]
    attempts = row["attempts"] + 1
    if isinstance(exc, SpamRisk):
        await _pause(p, row["account"], f"spam risk: {exc.code}")
        await _finish_failed(p, row, Fail(STRIKE, f"the platform refused the post for spam risk ({exc.code}); the "
                                                  f"account {row['account']} is paused", retryable=True))
        return
    if isinstance(exc, UnauditedClient):
        await p.repo.set_self_only(row["account"])
        await back_to_review(p, row, BackToReview(
            "unaudited_client", f"the TikTok app is not audited: it may post only SELF_ONLY, and only to private "
                                f"accounts (asked {row['privacy_level']} on {row['account']}); make the account "
                                "private and approve it again as SELF_ONLY, or have the app audited (then "
                                f"`reelfab accounts set {row['account']} --audited`)"))
        return
    if isinstance(exc, RateLimited):
        until = p.clock() + timedelta(seconds=max(exc.retry_after_s, 1.0))
        await p.repo.update_review(None, job_id, next_attempt_at=until, waiting_for="rate limited by the platform")
        return
    if attempts >= p.settings.publisher_max_attempts and not row["upload_done"] and not row["publish_id"]:
        await _finish_failed(p, row, Fail("publish_error", f"gave up after {attempts} attempts: {exc}", retryable=True))
        return
    delay = backoff_s(attempts, max_s=p.settings.publisher_retry_max_s)
    await p.repo.update_review(None, job_id, attempts=attempts, next_attempt_at=p.clock() + timedelta(seconds=delay),
                               waiting_for=f"retrying after an error: {str(exc)[:300]}")
    log.warning("post attempt failed; retrying later", job_id=job_id, attempt=attempts, delay_s=delay,
                error=str(exc)[:500])


async def _pause(p: Publisher, account: str, reason: str) -> None:
    until = p.clock() + timedelta(seconds=p.settings.publisher_spam_pause_s)
    await p.repo.pause(account, until, reason)
    metrics.ACCOUNT_PAUSES.inc()
    log.error("account paused", account=account, until=until.isoformat(), reason=reason)


def _later(p: Publisher, until: datetime | None = None) -> datetime:
    """When a waiting post looks again: at the pause's end, else after a minute (no busy loop)."""
    now = p.clock()
    return until if until is not None and until > now else now + timedelta(seconds=60)


def _lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {"subject_id": row["subject_id"], "consent_version": row["consent_version"],
            "template_id": row["template_id"], "template_tags": list(row["template_tags"]), "arm_id": row["arm_id"],
            "final_sha256": row["final_sha256"], "c2pa_label": row["c2pa_label"], "approved_by": row["decided_by"],
            "privacy_level": row["privacy_level"]}

