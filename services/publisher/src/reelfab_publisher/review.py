"""The review desk over the publisher's tables (desk.Desk): what waits, what each account may do now
(creator_info, asked live), approvals and rejections (audited: who, when, what; a rejection ends the
job with job.failed), takedowns, and auto-approval — only for accounts that explicitly allow it, which
only dry-run and sandbox accounts may."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from reelfab.bus import new_event_id
from reelfab.contracts.generated.records import JobFailed
from reelfab.logging import get_logger

from . import metrics
from .accounts import NoValidToken, account_problem
from .bootstrap import Publisher
from .desk import (
    APPROVED,
    OPEN_STATES,
    REJECTED,
    WAITING,
    AccountChoice,
    Approval,
    NotFound,
    ReviewError,
    ReviewItem,
    Takedown,
)
from .post_rules import DRYRUN_PRIVACY, Offer, check_approval, clean_hashtags, self_only
from .poster import fail_in_tx
from .repository import AccountRow
from .tiktok_api import TikTokError

log = get_logger("reelfab.publisher.review")
SESSION_TTL_S = 12 * 3600  # a review-page session ends after this, or at logout
# actors the publisher and the demo write into the audit; no operator may take these names
RESERVED_ACTORS = frozenset({"publisher", "demo-operator", "operator", "system", "admin", "auto", "cli"})
INBOX_DRAFT = "INBOX_DRAFT"  # an inbox account's only "privacy level": the creator chooses it in the app
DECIDED = ("approved", "posting", "in_inbox", "published", "rejected", "failed", "stopped")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ReviewDesk:
    def __init__(self, p: Publisher) -> None:
        self.p = p
        self._auto_warned: set[tuple[str, str]] = set()

    async def operator(self, token: str) -> str | None:
        return await self.p.repo.operator(token_sha256(token)) if token else None

    async def start_session(self, token: str) -> tuple[str, str] | None:
        name = await self.operator(token)
        if name is None:
            return None
        session_id = secrets.token_urlsafe(32)
        await self.p.repo.add_session(token_sha256(session_id), name,
                                      self.p.clock() + timedelta(seconds=SESSION_TTL_S))
        await self.p.repo.audit(None, None, name, "logged_in", {})
        return session_id, name

    async def session(self, session_id: str) -> str | None:
        if not session_id:
            return None
        return await self.p.repo.session_operator(token_sha256(session_id), self.p.clock())

    async def end_session(self, session_id: str) -> None:
        if session_id:
            await self.p.repo.end_session(token_sha256(session_id))

    async def waiting(self) -> list[ReviewItem]:
        return [self._item(r) for r in await self.p.repo.reviews((WAITING,))]

    async def recent(self, limit: int = 50) -> list[ReviewItem]:
        return [self._item(r) for r in await self.p.repo.reviews(DECIDED, newest_first=True, limit=limit)]

    async def item(self, job_id: str) -> ReviewItem:
        row = await self.p.repo.review(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} in the review queue")
        return self._item(row)

    async def video_path(self, job_id: str) -> Path:
        row = await self.p.repo.review(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} in the review queue")
        try:
            path = self.p.store.local_path(row["final_uri"])
        except Exception:  # noqa: BLE001 - not a file this store serves
            raise NotFound(f"the video of {job_id} is not readable here") from None
        if not path.is_file():
            raise NotFound(f"the video of {job_id} is gone (consent withdrawn or media purged)")
        return path

    async def accounts(self) -> list[AccountChoice]:
        return list(await asyncio.gather(*(self._choice(a) for a in await self.p.repo.accounts())))

    async def offer(self, a: AccountRow) -> Offer:
        """What the account may post now. Raises ReviewError naming the problem."""
        problem = account_problem(a, self.p.clock())
        if problem is not None:
            raise ReviewError(f"account {a.name} cannot post now: {problem}")
        if a.platform == "dryrun":
            offer = Offer(DRYRUN_PRIVACY)
        elif a.mode == "inbox":
            offer = Offer((INBOX_DRAFT,))
        else:
            client = self.p.client
            if client is None:
                raise ReviewError("no TikTok client configured (REELFAB_TIKTOK_CLIENT_KEY, _SECRET)")
            try:
                info = await self.p.tokens.call(a.name, client.creator_info)
            except NoValidToken as exc:
                raise ReviewError(str(exc)) from None
            except TikTokError as exc:
                raise ReviewError(f"account {a.name}: creator_info failed: {exc}") from None
            offer = Offer(tuple(info.privacy_level_options), info.comment_disabled, info.duet_disabled,
                          info.stitch_disabled, float(info.max_video_post_duration_sec))
        return self_only(offer) if a.self_only else offer

    async def _choice(self, a: AccountRow) -> AccountChoice:
        try:
            o = await self.offer(a)
        except ReviewError as exc:
            return AccountChoice(a.name, a.platform, a.mode, (), problem=str(exc))
        return AccountChoice(a.name, a.platform, a.mode, o.privacy_level_options, o.comment_disabled,
                             o.duet_disabled, o.stitch_disabled, o.max_duration_s)

    async def approve(self, job_id: str, approval: Approval, actor: str, *, action: str = "approved") -> ReviewItem:
        row = await self.p.repo.review(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} in the review queue")
        if row["status"] != WAITING:
            raise ReviewError(f"job {job_id} is {row['status']}, not waiting for a decision")
        account = await self.p.repo.account(approval.account)
        if account is None:
            raise ReviewError(f"no account {approval.account!r}; `reelfab accounts list` shows them")
        if account.platform != "dryrun" and account.platform != row["platform"]:
            raise ReviewError(f"job {job_id} is for {row['platform']}; account {account.name} posts to {account.platform}")
        checked = check_approval(approval, await self.offer(account), row["duration_s"])
        title = " ".join((approval.title if approval.title is not None else row["title"]).split())
        if not title:
            raise ReviewError("the title is empty")
        hashtags = clean_hashtags(approval.hashtags) if approval.hashtags is not None else row["hashtags"]
        options = {"disable_comment": checked.disable_comment, "disable_duet": checked.disable_duet,
                   "disable_stitch": checked.disable_stitch, "brand_content_toggle": checked.brand_content_toggle,
                   "brand_organic_toggle": checked.brand_organic_toggle, "cover_timestamp_ms": checked.cover_timestamp_ms}
        now = self.p.clock()
        async with self.p.pool.acquire() as conn, conn.transaction():
            current = await self.p.repo.review(job_id, conn, lock=True)
            if current is None or current["status"] != WAITING:
                raise ReviewError(f"job {job_id} was decided meanwhile ({current['status'] if current else 'gone'})")
            await self.p.repo.update_review(
                conn, job_id, status=APPROVED, account=account.name, privacy_level=checked.privacy_level,
                post_options=options, title=title, hashtags=list(hashtags), decided_by=actor, decided_at=now,
                next_attempt_at=now, attempts=0)
            await self.p.repo.audit(conn, job_id, actor, action, {
                "account": account.name, "privacy_level": checked.privacy_level, "title": title,
                "hashtags": list(hashtags), **options, "is_aigc": True, "sha256": row["final_sha256"]})
        metrics.DECISIONS.labels(action).inc()
        log.info("approved", job_id=job_id, actor=actor, account=account.name, privacy=checked.privacy_level)
        return await self.item(job_id)

    async def reject(self, job_id: str, reason: str, actor: str) -> ReviewItem:
        reason = " ".join(reason.split())
        if not reason:
            raise ReviewError("a rejection needs a reason")
        if len(reason) > 1000:
            raise ReviewError(f"the reason is {len(reason)} characters; keep it under 1000")
        row = await self.p.repo.review(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} in the review queue")
        if row["status"] != WAITING:
            raise ReviewError(f"job {job_id} is {row['status']}, not waiting for a decision")
        record = JobFailed(
            event_id=new_event_id(), occurred_at=self.p.clock(), producer=self.p.spec.name, trace_id=row["trace_id"],
            job_id=job_id, stage=self.p.spec.name, reason_code="rejected_in_review",
            reason=f"rejected by {actor}: {reason}"[:2000], retryable=False, attempts=1, subject_id=row["subject_id"],
            consent_version=row["consent_version"])
        async with self.p.pool.acquire() as conn, conn.transaction():
            current = await self.p.repo.review(job_id, conn, lock=True)
            if current is None or current["status"] != WAITING:
                raise ReviewError(f"job {job_id} was decided meanwhile")
            await self.p.repo.update_review(conn, job_id, status=REJECTED, reason=reason,
                                            reason_code="rejected_in_review", decided_by=actor,
                                            decided_at=self.p.clock())
            await self.p.repo.audit(conn, job_id, actor, "rejected", {"reason": reason})
            await self.p.outbox.add(conn, "reelfab.job.failed.v1", record)
        metrics.DECISIONS.labels("rejected").inc()
        log.info("rejected", job_id=job_id, actor=actor, reason=reason)
        return await self.item(job_id)

    async def takedowns(self, include_done: bool = False) -> list[Takedown]:
        return [_takedown(r) for r in await self.p.repo.takedowns(include_done)]

    async def takedown_done(self, post_id: str, actor: str, note: str) -> Takedown:
        found = await self.p.repo.takedown(post_id)
        if found is None:
            raise NotFound(f"no takedown for post {post_id!r}")
        before = _takedown(found)
        if before.done_at is not None:
            raise ReviewError(f"the takedown of {post_id} was marked done already, by {before.done_by} "
                              f"({before.note or 'no note'})")
        row = await self.p.repo.takedown_done(post_id, actor, note)
        assert row is not None
        await self.p.repo.audit(None, row["job_id"], actor, "takedown_done", {"post_id": post_id, "note": note})
        return _takedown(row)

    async def auto_approve(self) -> int:
        """Waiting videos go to the first account (by name) that allows auto-approval and can take them,
        with its configured privacy level; recorded as auto-approved by that account's rule."""
        autos = [a for a in await self.p.repo.accounts() if a.auto_approve and (a.platform == "dryrun" or a.sandbox)]
        if not autos:
            return 0
        done = 0
        for row in await self.p.repo.reviews((WAITING,), limit=50):
            for a in autos:
                if a.platform != "dryrun" and a.platform != row["platform"]:
                    continue
                try:
                    if not a.auto_privacy:  # there is no default privacy level, for a person or a rule
                        raise ReviewError(f"account {a.name} auto-approves but has no --auto-privacy level")
                    await self.approve(row["job_id"], Approval(a.name, a.auto_privacy), f"auto:{a.name}",
                                       action="auto_approved")
                    done += 1
                    break
                except ReviewError as exc:
                    if (row["job_id"], a.name) not in self._auto_warned:  # once, not every pass
                        self._auto_warned.add((row["job_id"], a.name))
                        log.warning("auto-approval not possible", job_id=row["job_id"], account=a.name, why=str(exc))
        return done

    def _item(self, r: dict[str, Any]) -> ReviewItem:
        terms = self.p.view.terms(r["subject_id"])
        consent: dict[str, str] = {}
        if terms is not None:
            consent = {"status": terms.status, "version": str(terms.consent_version),
                       "platforms": ", ".join(terms.scope.platforms) or "any",
                       "allowed tags": ", ".join(terms.scope.allowed_tags) or "any",
                       "commercial use": "yes" if terms.scope.commercial_use else "no",
                       "valid until": terms.valid_until.isoformat() if terms.valid_until else "no end"}
        lineage = {"template": r["template_id"], "template tags": ", ".join(r["template_tags"]) or "-",
                   "arm": r["arm_id"] or "-", "consent version": str(r["consent_version"]),
                   "sha256": r["final_sha256"], "C2PA manifest": r["c2pa_label"] or "not signed",
                   "commercial": {True: "yes", False: "no", None: "unknown (checked as commercial)"}[r["commercial"]]}
        if r["publish_id"]:
            lineage["publish id"] = r["publish_id"]
        if r["waiting_for"] and r["status"] in OPEN_STATES:
            lineage["waiting for"] = r["waiting_for"]
        return ReviewItem(
            job_id=r["job_id"], status=r["status"], subject_id=r["subject_id"], consent_version=r["consent_version"],
            template_id=r["template_id"], arm_id=r["arm_id"], title=r["title"], hashtags=tuple(r["hashtags"]),
            duration_s=r["duration_s"], final_sha256=r["final_sha256"], c2pa_label=r["c2pa_label"],
            commercial=r["commercial"], platform=r["platform"], received_at=r["received_at"], lineage=lineage,
            consent=consent, account=r["account"], privacy_level=r["privacy_level"], decided_by=r["decided_by"],
            decided_at=r["decided_at"], reason=r["reason"], post_id=r["post_id"], share_url=r["share_url"])


def _takedown(r: Any) -> Takedown:
    return Takedown(r["post_id"], r["job_id"], r["subject_id"], r["account"], r["platform"], r["requested_at"],
                    r["reason"], r["done_at"], r["done_by"], r["note"])


async def stop_open_jobs(p: Publisher, conn: Any, subject: str, code: str, detail: str) -> list[str]:
    """A withdrawn consent stops the subject's jobs not yet published (each with job.failed), in the
    caller's transaction. An upload in progress stops at its next chunk's check."""
    stopped = []
    for row in await p.repo.open_of_subject(conn, subject):
        outcome = ("the upload was stopped; whether the platform made the post anyway is being checked (a post "
                   "made anyway goes to the takedown queue)") if row["publish_id"] else "not posted"
        record = JobFailed(
            event_id=new_event_id(), occurred_at=p.clock(), producer=p.spec.name, trace_id=row["trace_id"],
            job_id=row["job_id"], stage=p.spec.name, reason_code=code, reason=f"{detail}; {outcome}"[:2000],
            retryable=False, attempts=row["attempts"] + 1, subject_id=subject, consent_version=row["consent_version"])
        if await fail_in_tx(p, row["job_id"], record, "stopped", conn):
            stopped.append(row["job_id"])
    return stopped

