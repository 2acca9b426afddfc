"""Posting accounts and their OAuth tokens. Tokens are encrypted at rest (Fernet, key from settings);
an access token is refreshed before it expires (TikTok: 2 h) from the refresh token (180 days), and
the refresh token the answer carries is stored in the same statement as the access token, at once:
TikTok rotates it, and the old one stops working as soon as the new one is issued. A refresh happens
under the account row's lock, so two publishers never spend the same refresh token."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.fernet import Fernet, InvalidToken

from reelfab.errors import ReelfabError
from reelfab.logging import get_logger
from reelfab.settings import Settings

from .repository import AccountRow, PublisherRepository
from .tiktok_api import AccessTokenInvalid, InvalidGrant, TikTokClient

T = TypeVar("T")
log = get_logger("reelfab.publisher.accounts")
PLATFORMS = ("tiktok", "dryrun")
MODES = ("direct", "inbox")


class NoValidToken(ReelfabError):
    """The account has no usable token (never given, refresh refused, refresh token expired): its posts
    wait until an operator re-authorises it (`reelfab accounts add --replace` with new tokens)."""


class TokenCipher:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCipher:
        if settings.publisher_token_key:
            return cls(_fernet_key(settings.publisher_token_key))
        return cls(key_file(Path(settings.state_dir) / "publisher-token.key"))

    def seal(self, token: str) -> bytes:
        return self._fernet.encrypt(token.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise NoValidToken("a stored token does not decrypt with REELFAB_PUBLISHER_TOKEN_KEY (was the key "
                               "changed?); add the account's tokens again") from None


def _fernet_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:  # binascii.Error: not base64 at all
        raw = b""
    if len(raw) != 32:
        raise ReelfabError("REELFAB_PUBLISHER_TOKEN_KEY must be the base64 of 32 bytes, e.g. `python3 -c "
                           "'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'`")
    return base64.urlsafe_b64encode(raw)


def key_file(path: Path) -> bytes:
    """Development: a key created once beside the local stack's data, readable by its owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


@dataclass(frozen=True)
class AccountState:
    """What an operator and the poster need to know of an account, tokens aside."""

    name: str
    platform: str
    mode: str
    problem: str | None  # why it cannot post now, if it cannot


def account_problem(a: AccountRow, now: datetime) -> str | None:
    if a.paused_until is not None and a.paused_until > now:
        return f"paused until {a.paused_until:%Y-%m-%d %H:%M} UTC: {a.paused_reason or 'spam risk'}"
    if a.platform == "dryrun":
        return None
    if a.token_problem:
        return f"no valid token: {a.token_problem}"
    if a.refresh_token is None or a.refresh_expires_at is None or a.refresh_expires_at <= now:
        if a.access_token is None or a.access_expires_at is None or a.access_expires_at <= now:
            return "no valid token: the access and refresh tokens have expired; add the account's tokens again"
    return None


def needs_refresh(a: AccountRow, now: datetime, margin_s: float) -> bool:
    return a.access_expires_at is None or a.access_expires_at - timedelta(seconds=margin_s) <= now


class AccountTokens:
    """Access tokens for calls to the platform, refreshed before expiry and once after a refusal."""

    def __init__(self, repo: PublisherRepository, cipher: TokenCipher, client: TikTokClient | None, *,
                 clock: Callable[[], datetime], margin_s: float) -> None:
        self.repo = repo
        self.cipher = cipher
        self.client = client
        self.clock = clock
        self.margin_s = margin_s

    async def token(self, name: str) -> str:
        a = await self.repo.account(name)
        if a is None:
            raise NoValidToken(f"no account {name!r}")
        if a.token_problem:
            raise NoValidToken(f"account {name}: {a.token_problem}")
        if needs_refresh(a, self.clock(), self.margin_s):
            return await self.refresh(name)
        if a.access_token is None:
            raise NoValidToken(f"account {name} has no access token")
        return self.cipher.open(a.access_token)

    async def refresh(self, name: str, *, refused: str | None = None) -> str:
        """A new access token (and the rotated refresh token) stored at once; returns the access token.
        ``refused``: the access token a call was refused with — when another publisher refreshed since,
        its newer token is used instead of spending the refresh token again."""
        if self.client is None:
            raise NoValidToken("no TikTok client configured (REELFAB_TIKTOK_CLIENT_KEY / _SECRET)")
        problem: str | None = None
        async with self.repo.pool.acquire() as conn, conn.transaction():
            a = await self.repo.account(name, conn, lock=True)
            if a is None:
                raise NoValidToken(f"no account {name!r}")
            now = self.clock()
            if a.access_token is not None and not needs_refresh(a, now, self.margin_s):
                current = self.cipher.open(a.access_token)
                if current != refused:  # refreshed by someone else meanwhile
                    return current
            if a.refresh_token is None or a.refresh_expires_at is None or a.refresh_expires_at <= now:
                problem = "the refresh token has expired (TikTok: 180 days); authorise the account again"
            else:
                try:
                    grant = await self.client.refresh_token(self.cipher.open(a.refresh_token))
                except InvalidGrant as exc:
                    problem = f"the platform refused the refresh token ({exc.code}); authorise the account again"
                    log.error("token refresh refused", account=name, code=exc.code)
                else:
                    await self.repo.store_tokens(
                        conn, name, self.cipher.seal(grant.access_token), now + timedelta(seconds=grant.expires_in),
                        self.cipher.seal(grant.refresh_token), now + timedelta(seconds=grant.refresh_expires_in))
        if problem is not None:  # recorded after the row's lock is let go: the posts wait on it, visibly
            await self.repo.set_token_problem(name, problem)
            raise NoValidToken(f"account {name}: {problem}")
        log.info("access token refreshed", account=name, expires_in=grant.expires_in)
        return grant.access_token

    async def call(self, name: str, fn: Callable[[str], Awaitable[T]]) -> T:
        """``fn(access_token)``; an access token the platform refuses is refreshed and the call tried once
        more (a second refusal is the platform's answer)."""
        token = await self.token(name)
        try:
            return await fn(token)
        except AccessTokenInvalid:
            log.info("access token refused; refreshing", account=name)
            token = await self.refresh(name, refused=token)
            return await fn(token)
