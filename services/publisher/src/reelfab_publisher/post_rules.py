"""Pure decisions of the publisher: the caption cut to the platform's limit, what an approval may
choose given the creator's current options, what a platform answer turns into (a strike, a pause, a
wait, a failure), and how long to wait before the next attempt. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .desk import Approval, ReviewError

TITLE_MAX_UTF16 = 2200  # TikTok's caption limit, in UTF-16 code units
HASHTAG = re.compile(r"\w{1,100}")  # letters, digits and underscores, in any script
PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
DRYRUN_PRIVACY = PRIVACY_LEVELS  # the dry-run platform offers every level
STRIKE = "spam_risk"  # job.failed reason code analytics counts as a moderation strike


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Caption:
    text: str  # what goes out as the post's title
    trimmed: bool
    dropped_hashtags: tuple[str, ...]


def caption(title: str, hashtags: Sequence[str], limit: int = TITLE_MAX_UTF16) -> Caption:
    """The title with its hashtags appended, within ``limit`` UTF-16 units. The rule: hashtags go first,
    from the last one back; then the title is cut at the last word boundary that fits, ending in '…'.
    The title is the video's message; hashtags are the easier loss."""
    title = " ".join(title.split())
    tags = [t.lstrip("#") for t in hashtags if t.strip("# ")]
    kept = list(tags)

    def text(n: int) -> str:
        return " ".join([title, *(f"#{t}" for t in kept[:n])]).strip()

    n = len(kept)
    while n > 0 and utf16_len(text(n)) > limit:
        n -= 1
    dropped = tuple(kept[n:])
    kept = kept[:n]
    out = text(n)
    if utf16_len(out) <= limit:
        return Caption(out, bool(dropped), dropped)
    units = end = 0
    for i, ch in enumerate(title):  # the longest prefix that fits with the ellipsis, in UTF-16 units
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit - 1:
            break
        end = i + 1
    cut = title[:end]
    space = cut.rfind(" ")
    if space > end // 2:  # a word boundary, unless that would lose more than half
        cut = cut[:space]
    return Caption(cut.rstrip() + "…", True, dropped)


def clean_hashtags(raw: Sequence[str]) -> tuple[str, ...]:
    tags: list[str] = []
    for t in raw:
        t = t.strip().lstrip("#")
        if not t:
            continue
        if not HASHTAG.fullmatch(t):
            raise ReviewError(f"hashtag {t!r} is not 1-100 letters, digits or underscores")
        if t not in tags:
            tags.append(t)
    return tuple(tags)


@dataclass(frozen=True)
class Offer:
    """What the account's creator allows now (creator_info), or the dry-run platform's fixed offer."""

    privacy_level_options: tuple[str, ...]
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    max_duration_s: float | None = None


def check_approval(approval: Approval, offer: Offer, duration_s: float) -> Approval:
    """The approval as it will be posted: the privacy level must be one the creator offers now (TikTok:
    no default); a switch the creator turned off stays off; a video longer than allowed is refused."""
    if not approval.privacy_level:
        raise ReviewError("choose a privacy level: there is no default")
    if approval.privacy_level not in offer.privacy_level_options:
        raise ReviewError(f"privacy level {approval.privacy_level} is not offered by the account now "
                          f"(offered: {', '.join(offer.privacy_level_options) or 'none'})")
    if offer.max_duration_s is not None and duration_s > offer.max_duration_s + 0.05:
        raise ReviewError(f"the video lasts {duration_s:.1f} s; the account may post at most {offer.max_duration_s:g} s")
    if approval.brand_content_toggle and approval.privacy_level == "SELF_ONLY":
        raise ReviewError("branded content cannot be private (SELF_ONLY): choose another privacy level")
    return Approval(
        account=approval.account, privacy_level=approval.privacy_level, title=approval.title,
        hashtags=approval.hashtags, disable_comment=approval.disable_comment or offer.comment_disabled,
        disable_duet=approval.disable_duet or offer.duet_disabled,
        disable_stitch=approval.disable_stitch or offer.stitch_disabled,
        brand_content_toggle=approval.brand_content_toggle, brand_organic_toggle=approval.brand_organic_toggle,
        cover_timestamp_ms=max(0, approval.cover_timestamp_ms),
    )


def self_only(offer: Offer) -> Offer:
    """An unaudited client may post SELF_ONLY only."""
    return Offer(tuple(o for o in offer.privacy_level_options if o == "SELF_ONLY"), offer.comment_disabled,
                 offer.duet_disabled, offer.stitch_disabled, offer.max_duration_s)


def backoff_s(attempt: int, *, initial_s: float = 5.0, max_s: float = 600.0) -> float:
    return float(min(max_s, initial_s * 2 ** max(0, attempt - 1)))


def fail_reason_code(fail_reason: str | None) -> str:
    """job.failed's reason code for a post the platform failed: a spam-risk reason is a strike."""
    reason = (fail_reason or "").lower()
    if reason.startswith("spam_risk"):
        return STRIKE
    return "platform_failed"
