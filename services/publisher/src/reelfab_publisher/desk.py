"""The review desk: what an operator sees and decides before anything is posted (TikTok's Direct Post
guidelines: the account owner sees each video, chooses its privacy level from the account's own options,
and consents to each post). The review page (web.py) and `reelfab review` both work through ``Desk``;
review.py implements it over the publisher's repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from reelfab.errors import ReelfabError

# review states: a rendered video waits; an operator approves (or rejects) it; the poster takes it
WAITING = "waiting"
APPROVED = "approved"
POSTING = "posting"  # initialised on the platform, uploading or waiting for its processing
IN_INBOX = "in_inbox"  # an inbox-mode draft: the creator finishes it in the app
PUBLISHED = "published"
REJECTED = "rejected"
FAILED = "failed"
STOPPED = "stopped"  # consent withdrawn (or out of scope) before it was posted
OPEN_STATES = (WAITING, APPROVED, POSTING, IN_INBOX)


class ReviewError(ReelfabError):
    """An operator's action that cannot be done as asked (the message says why, for the page and the CLI)."""


class NotFound(ReviewError):
    """No such job (or account, or takedown) in the publisher's queue."""


@dataclass(frozen=True)
class ReviewItem:
    job_id: str
    status: str
    subject_id: str
    consent_version: int
    template_id: str
    arm_id: str | None
    title: str
    hashtags: tuple[str, ...]
    duration_s: float
    final_sha256: str
    c2pa_label: str | None
    commercial: bool | None
    platform: str
    received_at: datetime
    lineage: dict[str, str] = field(default_factory=dict)  # what made the video (model, music, style...) as far as known
    consent: dict[str, str] = field(default_factory=dict)  # the consent it was made under, as the view knows it now
    account: str | None = None
    privacy_level: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None  # a rejection's, a failure's or a stop's reason
    post_id: str | None = None
    share_url: str | None = None


@dataclass(frozen=True)
class AccountChoice:
    """An account a video can go to, with what its creator_info allows right now."""

    name: str
    platform: str  # tiktok | dryrun
    mode: str  # direct | inbox
    privacy_level_options: tuple[str, ...]  # empty: cannot post now (see problem)
    comment_disabled: bool = False  # the creator turned comments off: the post cannot turn them on
    duet_disabled: bool = False
    stitch_disabled: bool = False
    max_duration_s: float | None = None
    nickname: str | None = None
    problem: str | None = None  # why the account cannot take a post now (no valid token, paused, ...)


@dataclass(frozen=True)
class Approval:
    account: str
    privacy_level: str  # one of the account's options; no default
    title: str | None = None  # None: the render's title
    hashtags: tuple[str, ...] | None = None  # None: the render's
    disable_comment: bool = False
    disable_duet: bool = False
    disable_stitch: bool = False
    brand_content_toggle: bool = False  # paid partnership
    brand_organic_toggle: bool = False  # promoting the creator's own business
    cover_timestamp_ms: int = 1000


@dataclass(frozen=True)
class Takedown:
    post_id: str
    job_id: str | None
    subject_id: str
    account: str | None
    platform: str
    requested_at: datetime
    reason: str
    done_at: datetime | None = None
    done_by: str | None = None
    note: str | None = None  # what the operator did (given when marking it done)


class Desk(Protocol):
    async def operator(self, token: str) -> str | None:
        """The operator's name for a review token, None for an unknown or revoked one."""

    async def start_session(self, token: str) -> tuple[str, str] | None:
        """Log in: (session id, operator name) for a valid token, None otherwise. The session id is a
        random secret of the server's (stored as a hash); the token itself never goes into a cookie."""

    async def session(self, session_id: str) -> str | None:
        """The operator of a live session; None once it ended (logout), expired, or its operator's token
        was revoked or replaced."""

    async def end_session(self, session_id: str) -> None:
        """Logout: the session stops working at once, wherever its cookie is."""

    async def waiting(self) -> list[ReviewItem]:
        """Videos waiting for a decision, oldest first."""

    async def recent(self, limit: int = 50) -> list[ReviewItem]:
        """Videos decided lately (approved, posting, published, rejected, failed, stopped), newest first."""

    async def item(self, job_id: str) -> ReviewItem:
        """Raises NotFound."""

    async def video_path(self, job_id: str) -> Path:
        """The rendered file (local), for the player. Raises NotFound."""

    async def accounts(self) -> list[AccountChoice]:
        """Every account, with its creator_info options as the platform gives them now."""

    async def approve(self, job_id: str, approval: Approval, actor: str) -> ReviewItem:
        """Raises ReviewError (not waiting, privacy level not offered, account cannot post, ...)."""

    async def reject(self, job_id: str, reason: str, actor: str) -> ReviewItem:
        """Raises ReviewError (not waiting, empty reason)."""

    async def takedowns(self, include_done: bool = False) -> list[Takedown]:
        """Posts a revocation listed for takedown, oldest first."""

    async def takedown_done(self, post_id: str, actor: str, note: str) -> Takedown:
        """The operator took the post down on the platform (the API has no delete). Raises NotFound."""
