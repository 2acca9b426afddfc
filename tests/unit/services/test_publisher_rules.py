"""The publisher's pure decisions: the caption cut to TikTok's limit by rule, what an approval may choose
given the creator's options, what a platform failure turns into, and the accounts' token rules
(encrypted at rest, refreshed before expiry, problems named)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reelfab_publisher.accounts import NoValidToken, TokenCipher, account_problem, key_file, needs_refresh
from reelfab_publisher.desk import Approval, ReviewError
from reelfab_publisher.post_rules import (
    Offer,
    caption,
    check_approval,
    clean_hashtags,
    fail_reason_code,
    self_only,
    utf16_len,
)
from reelfab_publisher.repository import AccountRow

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_a_caption_within_the_limit_is_the_title_and_its_hashtags() -> None:
    c = caption("  A   dance\nfor you ", ["dance", "#ai"])
    assert c.text == "A dance for you #dance #ai" and not c.trimmed


def test_hashtags_go_first_then_the_title_is_cut_at_a_word_with_an_ellipsis() -> None:
    title = "word " * 430  # 2150 characters: fits alone, not with the hashtags
    c = caption(title, ["alpha", "beta", "gamma" * 20])
    assert utf16_len(c.text) <= 2200 and c.trimmed and "gamma" not in c.text
    assert c.dropped_hashtags[-1].startswith("gamma")
    long = caption("x" * 5000 + " tail", ["tag"])
    assert utf16_len(long.text) <= 2200 and long.text.endswith("…") and "#tag" not in long.text
    words = caption("lorem ipsum " * 400, [])
    assert words.text.endswith("…") and not words.text[:-1].endswith(" ") and utf16_len(words.text) <= 2200


def test_the_limit_counts_utf16_units_as_tiktok_does() -> None:
    emoji = "😀" * 1500  # 3000 UTF-16 units
    c = caption(emoji, [])
    assert utf16_len(c.text) <= 2200 and c.trimmed and len(c.text) <= 1100


def test_hashtags_are_cleaned_and_bad_ones_refused() -> None:
    assert clean_hashtags(["#dance", " ai ", "", "dance"]) == ("dance", "ai")
    for bad in ("two words", "a#b", "x" * 101):
        with pytest.raises(ReviewError, match="hashtag"):
            clean_hashtags([bad])


def test_an_approval_keeps_what_the_creator_forbids_off_and_needs_an_offered_level() -> None:
    offer = Offer(("PUBLIC_TO_EVERYONE", "SELF_ONLY"), comment_disabled=True, max_duration_s=60)
    checked = check_approval(Approval("a", "SELF_ONLY", disable_duet=True), offer, 20.0)
    assert checked.disable_comment and checked.disable_duet and not checked.disable_stitch
    with pytest.raises(ReviewError, match="no default"):
        check_approval(Approval("a", ""), offer, 20.0)
    with pytest.raises(ReviewError, match="not offered"):
        check_approval(Approval("a", "FOLLOWER_OF_CREATOR"), offer, 20.0)
    with pytest.raises(ReviewError, match="at most 60"):
        check_approval(Approval("a", "SELF_ONLY"), offer, 61.0)
    with pytest.raises(ReviewError, match="branded"):
        check_approval(Approval("a", "SELF_ONLY", brand_content_toggle=True), offer, 20.0)
    assert self_only(offer).privacy_level_options == ("SELF_ONLY",)


def test_spam_risk_failures_are_strikes_and_others_are_not() -> None:
    assert fail_reason_code("spam_risk_too_many_posts") == "spam_risk"
    assert fail_reason_code("SPAM_RISK") == "spam_risk"
    assert fail_reason_code("file_format_check_failed") == "platform_failed"
    assert fail_reason_code(None) == "platform_failed"


def account(**kw: object) -> AccountRow:
    base: dict[str, object] = dict(
        name="tt", platform="tiktok", mode="direct", open_id="o", access_token=b"x",
        access_expires_at=NOW + timedelta(hours=2), refresh_token=b"y", refresh_expires_at=NOW + timedelta(days=180),
        token_problem=None, auto_approve=False, auto_privacy=None, sandbox=False, self_only=False,
        paused_until=None, paused_reason=None)
    base.update(kw)
    return AccountRow(**base)  # type: ignore[arg-type]


def test_tokens_are_refreshed_inside_the_margin_only() -> None:
    assert not needs_refresh(account(), NOW, 600)
    assert needs_refresh(account(access_expires_at=NOW + timedelta(seconds=599)), NOW, 600)
    assert needs_refresh(account(access_expires_at=None), NOW, 600)


def test_account_problems_are_named() -> None:
    assert account_problem(account(), NOW) is None
    assert "paused" in (account_problem(account(paused_until=NOW + timedelta(hours=1), paused_reason="spam"), NOW) or "")
    assert account_problem(account(paused_until=NOW - timedelta(seconds=1)), NOW) is None
    assert "no valid token" in (account_problem(account(token_problem="refused"), NOW) or "")
    expired = account(access_expires_at=NOW - timedelta(1), refresh_expires_at=NOW - timedelta(1))
    assert "expired" in (account_problem(expired, NOW) or "")
    assert account_problem(account(platform="dryrun", access_token=None, refresh_token=None), NOW) is None


def test_tokens_are_encrypted_at_rest_and_a_wrong_key_is_named(tmp_path: Path) -> None:
    cipher = TokenCipher(key_file(tmp_path / "k.key"))
    sealed = cipher.seal("act.secret-token")
    assert b"secret-token" not in sealed and cipher.open(sealed) == "act.secret-token"
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert TokenCipher(key_file(tmp_path / "k.key")).open(sealed) == "act.secret-token"  # the same key, reused
    with pytest.raises(NoValidToken, match="REELFAB_PUBLISHER_TOKEN_KEY"):
        TokenCipher(key_file(tmp_path / "other.key")).open(sealed)


def test_a_bad_token_key_setting_is_named() -> None:
    from reelfab.errors import ReelfabError
    from reelfab.settings import Settings

    for bad in ("not base64 at all!!", "c2hvcnQ="):
        with pytest.raises(ReelfabError, match="REELFAB_PUBLISHER_TOKEN_KEY"):
            TokenCipher.from_settings(Settings(publisher_token_key=bad))
    import base64
    good = base64.urlsafe_b64encode(bytes(range(32))).decode()
    cipher = TokenCipher.from_settings(Settings(publisher_token_key=good))
    assert cipher.open(cipher.seal("t")) == "t"
