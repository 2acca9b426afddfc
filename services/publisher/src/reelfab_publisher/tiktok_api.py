"""TikTok's Content Posting API (direct post, inbox upload, post status, creator info), the Login Kit's
token refresh and the Display API's video query, as one small async client with typed answers.

Why it is shaped this way:

- Answers are parsed strictly. TikTok says success in the body (``error.code == "ok"``), sometimes answers
  an error with HTTP 200 (creator_info's spam codes, documented as intentional) and spells a field
  ``publicaly_available_post_id``; a field that is missing or of the wrong type raises ContractViolation
  naming it, instead of turning into a None three calls later.
- Documented error codes become exception classes the publisher can act on (refresh the token, pause the
  account, ask an operator); anything else is a TikTokError with TikTok's code, message and log_id.
- The client keeps TikTok's per-token limits itself (6 inits, 20 creator_info queries, 30 status fetches in
  any minute) by waiting, so a burst of work is slowed rather than refused. A 429 that still comes is
  retried with exponential backoff (or after Retry-After), as are 5xx answers and transport errors; when the
  retries run out the caller gets RateLimited or TikTokUnavailable.
- Tokens never appear in exception messages or logs (they are redacted from TikTok's messages too, and the
  throttle keys on a hash), and the upload URL, which carries an upload token, is never quoted.
- The client never decides what to post: it always labels a post as AI-generated (``is_aigc``: true; there
  is no way to send false), does not trim titles (over 2200 UTF-16 units is a ValueError) and leaves the
  privacy level to the caller, who must have taken it from creator_info's options."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from reelfab.errors import ReelfabError
from reelfab.logging import get_logger

from .chunks import ChunkPlan

log = get_logger("reelfab.publisher.tiktok")

DEFAULT_API_URL = "https://open.tiktokapis.com"
TITLE_MAX_UTF16 = 2200

TOKEN_PATH = "/v2/oauth/token/"
CREATOR_INFO_PATH = "/v2/post/publish/creator_info/query/"
DIRECT_INIT_PATH = "/v2/post/publish/video/init/"
INBOX_INIT_PATH = "/v2/post/publish/inbox/video/init/"
STATUS_PATH = "/v2/post/publish/status/fetch/"
VIDEO_QUERY_PATH = "/v2/video/query/"

PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
PROCESSING_UPLOAD = "PROCESSING_UPLOAD"
PROCESSING_DOWNLOAD = "PROCESSING_DOWNLOAD"
SEND_TO_USER_INBOX = "SEND_TO_USER_INBOX"
PUBLISH_COMPLETE = "PUBLISH_COMPLETE"
FAILED = "FAILED"
STATUSES = (PROCESSING_UPLOAD, PROCESSING_DOWNLOAD, SEND_TO_USER_INBOX, PUBLISH_COMPLETE, FAILED)
TERMINAL_STATUSES = (PUBLISH_COMPLETE, FAILED)
VIDEO_FIELDS = ("id", "view_count", "like_count", "comment_count", "share_count", "share_url", "create_time")
MAX_VIDEO_IDS = 20  # the Display API's limit per /v2/video/query/ request
UPLOAD_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm")
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
_THROTTLE_PERIOD_S = 60.0
_THROTTLE_MARGIN_S = 1.0  # our window is a second longer than TikTok's, so clock skew cannot tip us over
_MAX_MESSAGE = 300
_UPLOAD_REFUSALS = {400: "bad_request", 403: "upload_url_expired", 404: "upload_not_found",
                    416: "range_not_satisfiable"}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# typed answers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """A token refresh's answer. TikTok rotates refresh tokens: store ``refresh_token`` (the newest) at once,
    the one just used may be refused from now on."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    open_id: str
    scope: str

    def __repr__(self) -> str:  # a grant printed in a log or a traceback must not leak its tokens
        return (f"TokenGrant(open_id={self.open_id!r}, scope={self.scope!r}, expires_in={self.expires_in}, "
                f"refresh_expires_in={self.refresh_expires_in})")


@dataclass(frozen=True)
class CreatorInfo:
    creator_username: str
    creator_nickname: str
    privacy_level_options: tuple[str, ...]
    comment_disabled: bool
    duet_disabled: bool
    stitch_disabled: bool
    max_video_post_duration_sec: int
    creator_avatar_url: str | None = None


@dataclass(frozen=True)
class PostInfo:
    """What the account owner chose for one post. There is deliberately no ``is_aigc`` field: every video
    this factory makes is AI-generated, so the client always labels it and no caller can turn that off."""

    title: str
    privacy_level: str
    disable_comment: bool = False
    disable_duet: bool = False
    disable_stitch: bool = False
    video_cover_timestamp_ms: int = 1000
    brand_content_toggle: bool = False
    brand_organic_toggle: bool = False


@dataclass(frozen=True)
class InitResult:
    publish_id: str
    upload_url: str  # carries an upload token: keep it out of logs; valid for one hour after init

    def __repr__(self) -> str:
        return f"InitResult(publish_id={self.publish_id!r}, upload_url=<redacted>)"


@dataclass(frozen=True)
class PublishStatus:
    status: str  # one of STATUSES
    fail_reason: str | None
    post_ids: tuple[str, ...]  # publicaly_available_post_id: only once a post is public and moderated
    uploaded_bytes: int | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class VideoStats:
    id: str
    view_count: int
    like_count: int
    comment_count: int
    share_count: int
    share_url: str | None = None
    create_time: int | None = None


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


class TikTokError(ReelfabError):
    """TikTok refused or failed a request. ``code`` is TikTok's (``error.code``, or the OAuth ``error``),
    ``log_id`` what TikTok's support asks for. The message never contains a token."""

    def __init__(self, endpoint: str, code: str, message: str, *, log_id: str | None = None,
                 http_status: int | None = None) -> None:
        self.endpoint = endpoint
        self.code = code
        self.message = message
        self.log_id = log_id
        self.http_status = http_status
        extras = [f"HTTP {http_status}"] if http_status is not None else []
        if log_id:
            extras.append(f"log_id {log_id}")
        tail = f" ({', '.join(extras)})" if extras else ""
        super().__init__(f"TikTok {endpoint}: {code}: {message}{tail}")


class AccessTokenInvalid(TikTokError):
    """The access token is invalid or expired: refresh it and retry once."""


class ScopeNotAuthorized(TikTokError):
    """The user did not grant the scope this call needs (video.publish, video.upload, video.list):
    the account must be authorised again with it."""


class RateLimited(TikTokError):
    """Still rate limited after the client's own retries; ``retry_after_s`` is when to try again."""

    def __init__(self, endpoint: str, code: str, message: str, *, retry_after_s: float,
                 log_id: str | None = None, http_status: int | None = None) -> None:
        super().__init__(endpoint, code, message, log_id=log_id, http_status=http_status)
        self.retry_after_s = retry_after_s


class SpamRisk(TikTokError):
    """A spam_risk code: too many posts in 24 h, too many pending inbox shares, a banned user, risky text.
    Do not retry soon; some (banned) never succeed."""


class UnauditedClient(TikTokError):
    """unaudited_client_can_only_post_to_private_accounts."""


class PrivacyLevelMismatch(TikTokError):
    """privacy_level_option_mismatch: the level is not among the account's creator_info options (ask again)."""


class ActiveUserCapReached(TikTokError):
    """reached_active_user_cap: the app's daily quota of active posting users is spent; try tomorrow."""


class InvalidParams(TikTokError):
    """invalid_param(s): TikTok refused the request's fields (the message says which); a bug, not weather."""


class UnknownPublish(TikTokError):
    """invalid_publish_id or token_not_authorized_for_specified_publish_id: the publish_id is not this
    token's (or does not exist)."""


class InvalidGrant(TikTokError):
    """The refresh token was refused (OAuth ``invalid_grant``): expired, revoked or already rotated.
    The account must be authorised again."""


class UploadRefused(TikTokError):
    """A chunk PUT was refused: 400 bad_request (headers or size), 403 upload_url_expired (over an hour),
    404 upload_not_found, 416 range_not_satisfiable (not the chunk TikTok expects next).
    ``uploaded_bytes`` is what TikTok says it holds, when it says (resume from there)."""

    def __init__(self, endpoint: str, code: str, message: str, *, uploaded_bytes: int | None = None,
                 log_id: str | None = None, http_status: int | None = None) -> None:
        super().__init__(endpoint, code, message, log_id=log_id, http_status=http_status)
        self.uploaded_bytes = uploaded_bytes


class TikTokUnavailable(TikTokError):
    """TikTok answered 5xx or could not be reached, after the client's retries."""


class ContractViolation(TikTokError):
    """TikTok's answer broke its documented contract; ``field`` names what (``data.publish_id``, ``body``)."""

    def __init__(self, endpoint: str, field: str, expected: str, *, log_id: str | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(endpoint, "contract_violation", f"{field}: expected {expected}", log_id=log_id,
                         http_status=http_status)
        self.field = field


_UNAUDITED_HINT = (" (an unaudited app may only post SELF_ONLY videos to private accounts: post SELF_ONLY "
                   "to a private account, or have the app audited by TikTok)")


def _error_class(code: str) -> type[TikTokError] | None:
    """The exception for a documented error code, None for one we do not know."""
    if code.startswith("spam_risk"):
        return SpamRisk
    return {
        "access_token_invalid": AccessTokenInvalid,
        "scope_not_authorized": ScopeNotAuthorized,
        "scope_permission_missed": ScopeNotAuthorized,
        "unaudited_client_can_only_post_to_private_accounts": UnauditedClient,
        "privacy_level_option_mismatch": PrivacyLevelMismatch,
        "reached_active_user_cap": ActiveUserCapReached,
        "invalid_param": InvalidParams,
        "invalid_params": InvalidParams,
        "invalid_publish_id": UnknownPublish,
        "token_not_authorized_for_specified_publish_id": UnknownPublish,
        "url_ownership_unverified": TikTokError,
        "app_version_check_failed": TikTokError,
        "invalid_file_upload": TikTokError,
    }.get(code)


class _Transient(Exception):
    """One attempt failed in a way a retry may cure (429, 5xx, transport); carries what to raise at the end."""

    def __init__(self, error: TikTokError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


# --------------------------------------------------------------------------------------------------
# strict reading of answers
# --------------------------------------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object of an answer; anything missing or mistyped is a ContractViolation
    naming the dotted path (``data.privacy_level_options[2]``)."""

    def __init__(self, endpoint: str, obj: Any, path: str, log_id: str | None, http_status: int) -> None:
        self.endpoint, self.path, self.log_id, self.http_status = endpoint, path, log_id, http_status
        if not isinstance(obj, dict):
            self.fail(path, f"an object, got {_type_name(obj)}")
        self.obj: dict[str, Any] = obj

    def fail(self, field: str, expected: str) -> NoReturn:
        raise ContractViolation(self.endpoint, field, expected, log_id=self.log_id, http_status=self.http_status)

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, expected: str) -> Any:
        if key not in self.obj or self.obj[key] is None:
            self.fail(self._name(key), f"{expected}, but it is missing")
        return self.obj[key]

    def str_(self, key: str, *, nonempty: bool = True) -> str:
        value = self._get(key, "a string")
        if not isinstance(value, str) or (nonempty and not value):
            self.fail(self._name(key), f"a {'non-empty ' if nonempty else ''}string, got {_type_name(value)}")
        return value

    def opt_str(self, key: str) -> str | None:
        if self.obj.get(key) is None:
            return None
        return self.str_(key, nonempty=False) or None

    def int_(self, key: str) -> int:
        value = self._get(key, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self._name(key), f"an integer, got {_type_name(value)}")
        return value

    def opt_int(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.int_(key)

    def bool_(self, key: str) -> bool:
        value = self._get(key, "a boolean")
        if not isinstance(value, bool):
            self.fail(self._name(key), f"a boolean, got {_type_name(value)}")
        return value

    def list_(self, key: str) -> list[Any]:
        value = self._get(key, "a list")
        if not isinstance(value, list):
            self.fail(self._name(key), f"a list, got {_type_name(value)}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        items = self.list_(key)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                self.fail(f"{self._name(key)}[{i}]", f"a non-empty string, got {_type_name(item)}")
        return tuple(items)

    def obj_(self, key: str) -> _Fields:
        return _Fields(self.endpoint, self._get(key, "an object"), self._name(key), self.log_id, self.http_status)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:_MAX_MESSAGE]


def _retry_after(resp: httpx.Response) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), None when absent or unreadable."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _json(resp: httpx.Response) -> Any:
    """The body as JSON, or a sentinel when it is not JSON at all."""
    try:
        return json.loads(resp.content)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


def _token_key(token: str) -> str:
    """The throttle's key for a token: a hash, so the client holds no extra copy of the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as TikTok counts a title (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------------
# the per-token throttle
# --------------------------------------------------------------------------------------------------


class _Window:
    """At most ``limit`` calls per key in any ``period`` seconds; ``acquire`` waits (with the injected sleep)
    until there is room, so work is slowed down to TikTok's limits instead of being refused."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        if limit < 1:
            raise ValueError(f"a per-minute limit must be at least 1, got {limit}")
        self.limit, self.period, self.clock, self.sleep = limit, period, clock, sleep
        self.calls: dict[str, deque[float]] = {}

    async def acquire(self, key: str) -> None:
        calls = self.calls.setdefault(key, deque())
        while True:
            now = self.clock()
            while calls and calls[0] <= now - self.period:
                calls.popleft()
            if len(calls) < self.limit:
                calls.append(now)
                self._forget_idle(now)
                return
            await self.sleep(calls[0] + self.period - now)

    def _forget_idle(self, now: float) -> None:
        if len(self.calls) > 1000:  # tokens rotate; drop the keys of those not used for a period
            for key in [k for k, q in self.calls.items() if not q or q[-1] <= now - self.period]:
                del self.calls[key]


# --------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------


class TikTokClient:
    """One client per process is enough: it holds the HTTP connection pool and the per-token throttles."""

    def __init__(self, base_url: str = DEFAULT_API_URL, *, client_key: str, client_secret: str,
                 http: httpx.AsyncClient | None = None, timeout_s: float = 60.0,
                 max_retries: int = 3, backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 init_per_minute: int = 6, status_per_minute: int = 30, creator_info_per_minute: int = 20) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._base = base_url.rstrip("/")
        self._client_key = client_key
        self._client_secret = client_secret
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout_s)
        self._max_retries = max_retries
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        period = _THROTTLE_PERIOD_S + _THROTTLE_MARGIN_S
        self._inits = _Window(init_per_minute, period, clock, sleep)  # direct and inbox inits share it
        self._status = _Window(status_per_minute, period, clock, sleep)
        self._creator_info = _Window(creator_info_per_minute, period, clock, sleep)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> TikTokClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # --- Login Kit -------------------------------------------------------------------------------

    async def refresh_token(self, refresh_token: str) -> TokenGrant:
        """A new access token (and a new refresh token: TikTok rotates them) for ``refresh_token``.
        InvalidGrant when TikTok refuses the refresh token: the account must be authorised again."""
        endpoint = "oauth/token"
        secrets = (refresh_token, self._client_secret)
        form = {"client_key": self._client_key, "client_secret": self._client_secret,
                "grant_type": "refresh_token", "refresh_token": refresh_token}

        async def attempt() -> TokenGrant:
            resp = await self._send(endpoint, "POST", self._base + TOKEN_PATH, data=form,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
            return self._read_grant(endpoint, resp, secrets)

        return await self._retrying(endpoint, attempt)

    def _read_grant(self, endpoint: str, resp: httpx.Response, secrets: Sequence[str]) -> TokenGrant:
        status = resp.status_code
        payload = _json(resp)
        if status >= 500:
            raise _Transient(TikTokUnavailable(endpoint, f"http_{status}", "TikTok server error", http_status=status))
        if payload is _NOT_JSON:
            if status == 429:
                raise self._rate_limited(endpoint, resp, "rate_limit_exceeded", "HTTP 429", None)
            raise ContractViolation(endpoint, "body", f"a JSON object, got {resp.headers.get('content-type')!r}",
                                    http_status=status)
        top = _Fields(endpoint, payload, "", None, status)
        log_id = top.obj.get("log_id") if isinstance(top.obj.get("log_id"), str) else None
        error = top.obj.get("error")
        if isinstance(error, dict):  # the v2 envelope, which some gateways answer with
            self._raise_for_envelope(endpoint, resp, top, secrets)
        if error is not None and error != "":
            if not isinstance(error, str):
                top.fail("error", f"an OAuth error code string, got {_type_name(error)}")
            description = top.obj.get("error_description")
            message = _redact(description if isinstance(description, str) else "", secrets)
            if error == "rate_limit_exceeded" or status == 429:
                raise self._rate_limited(endpoint, resp, error, message, log_id)
            cls = InvalidGrant if error == "invalid_grant" else TikTokError
            raise cls(endpoint, error, message, log_id=log_id, http_status=status)
        if status != 200:
            top.fail("error", f"an OAuth error with HTTP {status}, but there is none")
        token_type = top.str_("token_type")
        if token_type.lower() != "bearer":
            top.fail("token_type", f"'Bearer', got {token_type!r}")
        return TokenGrant(access_token=top.str_("access_token"), expires_in=top.int_("expires_in"),
                          refresh_token=top.str_("refresh_token"), refresh_expires_in=top.int_("refresh_expires_in"),
                          open_id=top.str_("open_id"), scope=top.str_("scope", nonempty=False))

    # --- Content Posting API ---------------------------------------------------------------------

    async def creator_info(self, access_token: str) -> CreatorInfo:
        """The account's current posting options (query them right before each post: they change)."""
        data = await self._api("creator_info", CREATOR_INFO_PATH, access_token, None, window=self._creator_info)
        options = data.str_list("privacy_level_options")
        return CreatorInfo(
            creator_username=data.str_("creator_username"), creator_nickname=data.str_("creator_nickname", nonempty=False),
            privacy_level_options=options, comment_disabled=data.bool_("comment_disabled"),
            duet_disabled=data.bool_("duet_disabled"), stitch_disabled=data.bool_("stitch_disabled"),
            max_video_post_duration_sec=data.int_("max_video_post_duration_sec"),
            creator_avatar_url=data.opt_str("creator_avatar_url"))

    async def init_direct(self, access_token: str, post: PostInfo, plan: ChunkPlan) -> InitResult:
        """Start a direct post (FILE_UPLOAD): the video is published once its last chunk arrives."""
        post_info = _post_info(post)
        body = {"post_info": post_info, "source_info": _source_info(plan)}
        data = await self._api("video/init", DIRECT_INIT_PATH, access_token, body, window=self._inits)
        return _init_result(data)

    async def init_inbox(self, access_token: str, plan: ChunkPlan) -> InitResult:
        """Start an inbox upload (a draft the creator finishes in the TikTok app; no title or settings)."""
        data = await self._api("inbox/video/init", INBOX_INIT_PATH, access_token,
                               {"source_info": _source_info(plan)}, window=self._inits)
        return _init_result(data)

    async def upload_chunk(self, upload_url: str, data: bytes, first: int, last: int, total: int, *,
                           content_type: str = "video/mp4") -> bool:
        """PUT one chunk (bytes ``first``..``last`` of ``total``, inclusive) to the init's upload URL.
        True when TikTok has the whole video (201), False when it expects more (206). UploadRefused for
        a refusal; its ``uploaded_bytes`` says where to resume (or ask fetch_status)."""
        if not 0 <= first <= last < total or len(data) != last - first + 1:
            raise ValueError(f"chunk bytes {first}-{last}/{total} do not fit {len(data)} bytes of data")
        if content_type not in UPLOAD_CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {UPLOAD_CONTENT_TYPES}, got {content_type!r}")
        endpoint = "upload"
        headers = {"Content-Type": content_type, "Content-Length": str(len(data)),
                   "Content-Range": f"bytes {first}-{last}/{total}"}

        attempts = 0

        async def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            resp = await self._send(endpoint, "PUT", upload_url, content=data, headers=headers)
            return self._read_upload(endpoint, resp, last, total, retried=attempts > 1)

        return await self._retrying(endpoint, attempt)

    def _read_upload(self, endpoint: str, resp: httpx.Response, last: int, total: int, *, retried: bool) -> bool:
        status = resp.status_code
        held = _uploaded_bytes(resp)
        if status == 416 and retried and held == last + 1:
            # the earlier attempt did arrive (its answer was lost or a 5xx): TikTok holds exactly this chunk
            return last == total - 1
        if status in (201, 206):
            complete = status == 201
            if complete != (last == total - 1):
                raise ContractViolation(endpoint, "status", f"{'201' if last == total - 1 else '206'} for bytes "
                                        f"up to {last} of {total}, got {status}", http_status=status)
            if held is not None and held != last + 1:
                raise ContractViolation(endpoint, "Content-Range", f"bytes 0-{last}/{total} held, got "
                                        f"{resp.headers.get('Content-Range')!r}", http_status=status)
            return complete
        if status == 429:
            raise self._rate_limited(endpoint, resp, "rate_limit_exceeded", "HTTP 429", None)
        if status >= 500:
            raise _Transient(TikTokUnavailable(endpoint, f"http_{status}", "TikTok upload server error",
                                               http_status=status))
        if status in _UPLOAD_REFUSALS:
            message = resp.text.strip()[:_MAX_MESSAGE] or resp.reason_phrase
            raise UploadRefused(endpoint, _UPLOAD_REFUSALS[status], message, uploaded_bytes=held, http_status=status)
        raise ContractViolation(endpoint, "status", f"201, 206 or a documented refusal, got {status}",
                                http_status=status)

    async def fetch_status(self, access_token: str, publish_id: str) -> PublishStatus:
        """Where a publish stands. Poll it (at most 30 a minute per token, which the client keeps)."""
        data = await self._api("status/fetch", STATUS_PATH, access_token, {"publish_id": publish_id},
                               window=self._status)
        status = data.str_("status")
        if status not in STATUSES:
            data.fail("data.status", f"one of {', '.join(STATUSES)}, got {status!r}")
        fail_reason = data.opt_str("fail_reason")
        if status == FAILED and fail_reason is None:
            data.fail("data.fail_reason", "a reason with status FAILED, but there is none")
        post_ids: list[str] = []
        if data.obj.get("publicaly_available_post_id") is not None:
            for i, item in enumerate(data.list_("publicaly_available_post_id")):
                if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).isdigit():
                    data.fail(f"data.publicaly_available_post_id[{i}]", f"a post id (int64), got {item!r}")
                post_ids.append(str(item))
        return PublishStatus(status=status, fail_reason=fail_reason, post_ids=tuple(post_ids),
                             uploaded_bytes=data.opt_int("uploaded_bytes"))

    # --- Display API -----------------------------------------------------------------------------

    async def query_videos(self, access_token: str, video_ids: Sequence[str]) -> list[VideoStats]:
        """Counts for the given videos (20 per request; longer lists are split). Videos that are not this
        user's, or no longer exist, are simply absent from the answer."""
        ids = list(dict.fromkeys(video_ids))
        if any(not isinstance(i, str) or not i for i in ids):
            raise ValueError("video ids must be non-empty strings")
        out: list[VideoStats] = []
        for start in range(0, len(ids), MAX_VIDEO_IDS):
            batch = ids[start:start + MAX_VIDEO_IDS]
            data = await self._api("video/query", VIDEO_QUERY_PATH, access_token,
                                   {"filters": {"video_ids": batch}}, params={"fields": ",".join(VIDEO_FIELDS)})
            for i, item in enumerate(data.list_("videos")):
                video = _Fields(data.endpoint, item, f"data.videos[{i}]", data.log_id, data.http_status)
                stats = VideoStats(id=video.str_("id"), view_count=video.int_("view_count"),
                                   like_count=video.int_("like_count"), comment_count=video.int_("comment_count"),
                                   share_count=video.int_("share_count"), share_url=video.opt_str("share_url"),
                                   create_time=video.opt_int("create_time"))
                if stats.id not in batch:
                    video.fail(f"data.videos[{i}].id", f"one of the requested ids, got {stats.id!r}")
                out.append(stats)
        return out

    # --- plumbing ------------------------------------------------------------------------------

    async def _api(self, endpoint: str, path: str, token: str, body: Mapping[str, Any] | None, *,
                   window: _Window | None = None, params: Mapping[str, str] | None = None) -> _Fields:
        """POST a JSON request with the user's token; the answer's ``data`` when ``error.code`` is ok."""
        if not token:
            raise ValueError("an access token is required")
        content = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": JSON_CONTENT_TYPE}

        async def attempt() -> _Fields:
            if window is not None:
                await window.acquire(_token_key(token))
            resp = await self._send(endpoint, "POST", self._base + path, content=content, headers=headers,
                                    params=params)
            return self._read_api(endpoint, resp, (token,))

        return await self._retrying(endpoint, attempt)

    def _read_api(self, endpoint: str, resp: httpx.Response, secrets: Sequence[str]) -> _Fields:
        status = resp.status_code
        payload = _json(resp)
        if status >= 500:  # whatever the body says (or does not): TikTok's side failed, try again
            raise _Transient(TikTokUnavailable(endpoint, _envelope_code(payload) or f"http_{status}",
                                               "TikTok server error", http_status=status))
        if payload is _NOT_JSON:
            if status == 429:
                raise self._rate_limited(endpoint, resp, "rate_limit_exceeded", "HTTP 429", None)
            if status == 401:
                raise AccessTokenInvalid(endpoint, "access_token_invalid", "HTTP 401", http_status=status)
            raise ContractViolation(endpoint, "body", f"a JSON object, got {resp.headers.get('content-type')!r}",
                                    http_status=status)
        top = _Fields(endpoint, payload, "", None, status)
        error = top.obj_("error")
        top.log_id = error.obj.get("log_id") if isinstance(error.obj.get("log_id"), str) else None
        if error.str_("code") != "ok":
            self._raise_for_envelope(endpoint, resp, top, secrets)
        if status != 200:
            top.fail("error.code", f"an error code with HTTP {status}, got 'ok'")
        data = top.obj_("data")
        data.log_id = top.log_id
        return data

    def _raise_for_envelope(self, endpoint: str, resp: httpx.Response, top: _Fields,
                            secrets: Sequence[str]) -> NoReturn:
        """Raise what a ``{"error": {"code": ..., "message": ..., "log_id": ...}}`` answer means."""
        status = resp.status_code
        error = top.obj_("error")
        code = error.str_("code")
        message = _redact(error.str_("message", nonempty=False), secrets)
        log_id = error.obj.get("log_id") if isinstance(error.obj.get("log_id"), str) else None
        if code == "rate_limit_exceeded" or status == 429:
            raise self._rate_limited(endpoint, resp, code, message, log_id)
        cls = _error_class(code)
        if cls is None:
            if status == 200:  # only documented codes may come with HTTP 200
                top.fail("error.code", f"'ok' or a documented error code with HTTP 200, got {code!r}")
            cls = AccessTokenInvalid if status == 401 else TikTokError
        if cls is UnauditedClient:
            message += _UNAUDITED_HINT
        raise cls(endpoint, code, message, log_id=log_id, http_status=status)

    def _rate_limited(self, endpoint: str, resp: httpx.Response, code: str, message: str,
                      log_id: str | None) -> _Transient:
        retry_after = _retry_after(resp)
        error = RateLimited(endpoint, code, message or "rate limit exceeded",
                            retry_after_s=retry_after if retry_after is not None else self._backoff_max_s,
                            log_id=log_id, http_status=resp.status_code)
        return _Transient(error, retry_after)

    async def _send(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            # the exception's text can hold the URL (the upload URL carries a token): name only its kind
            raise _Transient(TikTokUnavailable(endpoint, "transport_error", type(exc).__name__)) from exc

    def _delay(self, state: RetryCallState) -> float:
        """Retry-After when TikTok gave one, else exponential backoff from backoff_initial_s."""
        transient = _outcome(state)
        if transient is not None and transient.retry_after_s is not None:
            return transient.retry_after_s
        return float(min(self._backoff_max_s, self._backoff_initial_s * 2 ** (state.attempt_number - 1)))

    def _give_up(self, state: RetryCallState) -> bool:
        """Out of retries, or TikTok asks for a longer wait than we would ever sleep inline."""
        transient = _outcome(state)
        too_long = transient is not None and (transient.retry_after_s or 0.0) > self._backoff_max_s
        return state.attempt_number > self._max_retries or too_long

    async def _retrying(self, endpoint: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` with bounded retries of transient failures, raising the final TikTokError."""

        async def before_sleep(state: RetryCallState) -> None:
            transient = _outcome(state)
            log.warning("tiktok retrying", endpoint=endpoint, attempt=state.attempt_number,
                        code=transient.error.code if transient else None,
                        delay_s=state.next_action.sleep if state.next_action else None)

        retrying = AsyncRetrying(sleep=self._sleep, stop=self._give_up, wait=self._delay,
                                 retry=retry_if_exception_type(_Transient), before_sleep=before_sleep,
                                 reraise=True)
        try:
            return await retrying(attempt)
        except _Transient as transient:
            error = transient.error
            if isinstance(error, RateLimited):
                next_delay = self._backoff_initial_s * 2 ** self._max_retries
                error.retry_after_s = transient.retry_after_s or min(self._backoff_max_s, next_delay)
            raise error from transient.__cause__


def _envelope_code(payload: Any) -> str | None:
    """``error.code`` of an answer when it has one (for naming a 5xx), else None."""
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code and code != "ok" else None


def _outcome(state: RetryCallState) -> _Transient | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc if isinstance(exc, _Transient) else None


def _uploaded_bytes(resp: httpx.Response) -> int | None:
    """TikTok's ``Content-Range: bytes 0-{last}/{total}`` answer header as a byte count held."""
    value = resp.headers.get("Content-Range", "")
    try:
        span = value.split()[1].split("/")[0]
        return int(span.split("-")[1]) + 1
    except (IndexError, ValueError):
        return None


def _post_info(post: PostInfo) -> dict[str, Any]:
    length = utf16_length(post.title)
    if length > TITLE_MAX_UTF16:
        raise ValueError(f"the title is {length} UTF-16 units, over TikTok's {TITLE_MAX_UTF16}; trim it first")
    if not post.privacy_level:
        raise ValueError("privacy_level is required (one of creator_info's privacy_level_options; no default)")
    if isinstance(post.video_cover_timestamp_ms, bool) or not 0 <= post.video_cover_timestamp_ms < 2 ** 31:
        raise ValueError(f"video_cover_timestamp_ms must be a non-negative int32, got {post.video_cover_timestamp_ms}")
    return {
        "title": post.title,
        "privacy_level": post.privacy_level,
        "disable_duet": post.disable_duet,
        "disable_comment": post.disable_comment,
        "disable_stitch": post.disable_stitch,
        "video_cover_timestamp_ms": post.video_cover_timestamp_ms,
        "brand_content_toggle": post.brand_content_toggle,
        "brand_organic_toggle": post.brand_organic_toggle,
        "is_aigc": True,  # always: every video this factory makes is AI-generated
    }


def _source_info(plan: ChunkPlan) -> dict[str, Any]:
    return {"source": "FILE_UPLOAD", "video_size": plan.video_size, "chunk_size": plan.chunk_size,
            "total_chunk_count": plan.total_chunk_count}


def _init_result(data: _Fields) -> InitResult:
    publish_id = data.str_("publish_id")
    if len(publish_id) > 64:
        data.fail("data.publish_id", f"at most 64 characters, got {len(publish_id)}")
    upload_url = data.str_("upload_url")
    if not upload_url.startswith(("https://", "http://")) or len(upload_url) > 256:
        data.fail("data.upload_url", "an http(s) URL of at most 256 characters")
    return InitResult(publish_id=publish_id, upload_url=upload_url)
