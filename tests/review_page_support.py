"""An in-memory review desk (``reelfab_publisher.desk.Desk``) for the review page's tests: items, accounts,
tokens, sessions and takedowns held in dicts; every decision recorded with its actor. Sessions behave as the
real desk's: a random id, kept only as its hash, ended by logout or by revoking the operator's token."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reelfab_publisher.desk import (
    APPROVED,
    REJECTED,
    WAITING,
    AccountChoice,
    Approval,
    NotFound,
    ReviewError,
    ReviewItem,
    Takedown,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PRIVACY_ALL = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")


def make_item(job_id: str, *, minutes: int = 0, **overrides: object) -> ReviewItem:
    base: dict[str, object] = dict(
        job_id=job_id,
        status=WAITING,
        subject_id="subj_ada",
        consent_version=3,
        template_id="tpl_dance",
        arm_id="arm_1",
        title=f"A dance for {job_id}",
        hashtags=("dance", "fyp"),
        duration_s=3.0,
        final_sha256="ab" * 32,
        c2pa_label="c2pa.created",
        commercial=False,
        platform="tiktok",
        received_at=T0 + timedelta(minutes=minutes),
        lineage={"model": "inswapper_128", "music": "track_7"},
        consent={"scope": "tiktok", "expires": "2027-01-01"},
    )
    base.update(overrides)
    return ReviewItem(**base)  # type: ignore[arg-type]


def default_accounts() -> list[AccountChoice]:
    return [
        AccountChoice(
            name="main", platform="tiktok", mode="direct", nickname="Ada Dances",
            privacy_level_options=("PUBLIC_TO_EVERYONE", "FOLLOWER_OF_CREATOR", "SELF_ONLY"),
            comment_disabled=True, max_duration_s=600.0,
        ),
        AccountChoice(
            name="drafts", platform="dryrun", mode="inbox", nickname=None,
            privacy_level_options=("SELF_ONLY",),
        ),
        AccountChoice(
            name="broken", platform="tiktok", mode="direct", nickname="Paused",
            privacy_level_options=(), problem="no valid token: reconnect the account",
        ),
    ]  # fmt: skip


@dataclass
class FakeDesk:
    tokens: dict[str, str] = field(default_factory=lambda: {"tok-alice": "alice"})
    items: dict[str, ReviewItem] = field(default_factory=dict)
    videos: dict[str, Path] = field(default_factory=dict)
    account_list: list[AccountChoice] = field(default_factory=default_accounts)
    takedown_list: dict[str, Takedown] = field(default_factory=dict)
    approvals: list[tuple[str, Approval, str]] = field(default_factory=list)
    rejections: list[tuple[str, str, str]] = field(default_factory=list)
    takedowns_done: list[tuple[str, str, str]] = field(default_factory=list)
    # live sessions: the sha256 of a session id -> the token it was started with (ids themselves not kept)
    sessions: dict[str, str] = field(default_factory=dict)
    session_ids: list[str] = field(default_factory=list)  # every session id handed out, for the tests
    now: datetime = T0 + timedelta(hours=1)

    def add(self, item: ReviewItem, video: Path | None = None) -> ReviewItem:
        self.items[item.job_id] = item
        if video is not None:
            self.videos[item.job_id] = video
        return item

    def revoke(self, token: str) -> None:
        """The token stops working, and so does every session logged in with it (as the real desk does)."""
        self.tokens.pop(token, None)
        for key in [k for k, t in self.sessions.items() if t == token]:
            del self.sessions[key]

    def replace_token(self, old: str, new: str) -> None:
        """The operator gets a new token: the old one and its sessions stop working."""
        operator = self.tokens[old]
        self.revoke(old)
        self.tokens[new] = operator

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    # --- Desk ---------------------------------------------------------------------------------------------

    async def operator(self, token: str) -> str | None:
        return self.tokens.get(token)

    async def start_session(self, token: str) -> tuple[str, str] | None:
        operator = self.tokens.get(token)
        if operator is None:
            return None
        session_id = secrets.token_urlsafe(32)
        self.sessions[self._key(session_id)] = token
        self.session_ids.append(session_id)
        return session_id, operator

    async def session(self, session_id: str) -> str | None:
        token = self.sessions.get(self._key(session_id))
        return self.tokens.get(token) if token is not None else None

    async def end_session(self, session_id: str) -> None:
        self.sessions.pop(self._key(session_id), None)

    async def waiting(self) -> list[ReviewItem]:
        return sorted((i for i in self.items.values() if i.status == WAITING), key=lambda i: i.received_at)

    async def recent(self, limit: int = 50) -> list[ReviewItem]:
        decided = [i for i in self.items.values() if i.status != WAITING]
        decided.sort(key=lambda i: i.decided_at or i.received_at, reverse=True)
        return decided[:limit]

    async def item(self, job_id: str) -> ReviewItem:
        try:
            return self.items[job_id]
        except KeyError:
            raise NotFound(f"no job {job_id!r} in the review queue") from None

    async def video_path(self, job_id: str) -> Path:
        await self.item(job_id)
        try:
            return self.videos[job_id]
        except KeyError:
            raise NotFound(f"no rendered file for {job_id!r}") from None

    async def accounts(self) -> list[AccountChoice]:
        return list(self.account_list)

    async def approve(self, job_id: str, approval: Approval, actor: str) -> ReviewItem:
        item = await self.item(job_id)
        if item.status != WAITING:
            raise ReviewError(f"{job_id} is {item.status}, not waiting")
        account = next((a for a in self.account_list if a.name == approval.account), None)
        if account is None:
            raise NotFound(f"no account {approval.account!r}")
        if account.problem:
            raise ReviewError(f"account {account.name} cannot post now: {account.problem}")
        if approval.privacy_level not in account.privacy_level_options:
            raise ReviewError(
                f"privacy level {approval.privacy_level!r} is not offered by account {account.name} "
                f"(it offers {', '.join(account.privacy_level_options) or 'nothing'})"
            )
        self.approvals.append((job_id, approval, actor))
        done = dataclasses.replace(
            item, status=APPROVED, account=account.name, privacy_level=approval.privacy_level, decided_by=actor,
            decided_at=self.now, title=item.title if approval.title is None else approval.title,
            hashtags=item.hashtags if approval.hashtags is None else approval.hashtags,
        )  # fmt: skip
        self.items[job_id] = done
        return done

    async def reject(self, job_id: str, reason: str, actor: str) -> ReviewItem:
        item = await self.item(job_id)
        if item.status != WAITING:
            raise ReviewError(f"{job_id} is {item.status}, not waiting")
        if not reason.strip():
            raise ReviewError("a rejection needs a reason")
        self.rejections.append((job_id, reason, actor))
        done = dataclasses.replace(
            item, status=REJECTED, decided_by=actor, decided_at=self.now, reason=reason
        )
        self.items[job_id] = done
        return done

    async def takedowns(self, include_done: bool = False) -> list[Takedown]:
        found = [t for t in self.takedown_list.values() if include_done or t.done_at is None]
        return sorted(found, key=lambda t: t.requested_at)

    async def takedown_done(self, post_id: str, actor: str, note: str) -> Takedown:
        try:
            takedown = self.takedown_list[post_id]
        except KeyError:
            raise NotFound(f"no takedown for post {post_id!r}") from None
        self.takedowns_done.append((post_id, actor, note))
        done = dataclasses.replace(takedown, done_at=self.now, done_by=actor, note=note)
        self.takedown_list[post_id] = done
        return done
