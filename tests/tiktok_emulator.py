"""A strict local emulator of the TikTok endpoints the publisher uses, for tests (TikTok itself cannot be
reached from here, and a mock that accepts anything would hide exactly the mistakes that matter).

It implements, from TikTok's public developer docs (Content Posting API, media transfer guide, get post
status, creator_info query, inbox upload; Login Kit token refresh; Display API video query):

- ``POST /v2/oauth/token/``: refresh-token grant with rotation (a new refresh token invalidates the old);
- ``POST /v2/post/publish/creator_info/query/``, ``/video/init/``, ``/inbox/video/init/``, ``/status/fetch/``;
- ``PUT /upload/?upload_id=..&upload_token=..``: the upload URL init hands out, with the chunk rules;
- ``POST /v2/video/query/?fields=..``: stats of the user's videos, 20 ids at most.

and refuses what TikTok refuses: missing or wrong headers, unknown or mistyped fields, a privacy level not
among the creator's options, chunk plans and chunks that break the rules (sizes, counts, a Content-Range
that does not continue where the received bytes end, a total that is not the video's size), an expired
upload URL (one hour), more than 6 inits / 20 creator_info queries / 30 status fetches a minute per token
(429 rate_limit_exceeded), expired or unknown access tokens (401 access_token_invalid), posts of an
unaudited client other than SELF_ONLY to a private account, daily caps (spam_risk_*), and whatever a test
injects (``fail_next``, ``break_contract``).

``Emulator`` is the state tests drive and inspect (``posts``, ``inits``, ``requests``, ``status_fetches``);
``running_emulator()`` serves it with uvicorn on 127.0.0.1 and a free port in a background thread.
Everything takes its time from ``emu.clock`` (time.monotonic unless a test shares a fake clock with the
client), so token expiry, upload URL expiry and rate windows can be tested without waiting."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MB = 1024 * 1024
PUBLIC_ACCOUNT_OPTIONS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
PRIVATE_ACCOUNT_OPTIONS = ("FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
DEFAULT_SCOPES = frozenset({"user.info.basic", "video.publish", "video.upload", "video.list"})
VIDEO_FIELDS = frozenset({"id", "create_time", "cover_image_url", "share_url", "video_description", "duration",
                          "height", "width", "title", "embed_html", "embed_link", "like_count", "comment_count",
                          "share_count", "view_count"})
POST_INFO_FIELDS = {"title": str, "privacy_level": str, "disable_duet": bool, "disable_comment": bool,
                    "disable_stitch": bool, "video_cover_timestamp_ms": int, "brand_content_toggle": bool,
                    "brand_organic_toggle": bool, "is_aigc": bool}
REQUIRED_POST_INFO = ("brand_content_toggle", "brand_organic_toggle")
UPLOAD_TYPES = ("video/mp4", "video/quicktime", "video/webm")
MAX_VIDEO_SIZE = 4 * 1024 * MB
DAY_S = 24 * 3600.0

# endpoint names, as fail_next / break_contract / requests name them
ENDPOINTS = ("token", "creator_info", "init_direct", "init_inbox", "status", "video_query", "upload")


@dataclass
class Creator:
    """What creator_info answers for a user (the account's settings as TikTok knows them)."""

    username: str
    nickname: str
    privacy_level_options: tuple[str, ...] = PUBLIC_ACCOUNT_OPTIONS
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    max_video_post_duration_sec: int = 600
    avatar_url: str | None = "https://p16.tiktokcdn.example/avatar.jpeg"

    @property
    def private_account(self) -> bool:
        return "FOLLOWER_OF_CREATOR" in self.privacy_level_options


@dataclass
class User:
    open_id: str
    access_token: str  # the newest (tests read these after a refresh)
    refresh_token: str
    creator: Creator
    scopes: frozenset[str] = DEFAULT_SCOPES
    banned: bool = False


@dataclass
class Publish:
    """One init and its upload, processing and outcome."""

    publish_id: str
    open_id: str
    mode: str  # direct | inbox
    body: dict[str, Any]
    video_size: int
    chunk_size: int
    total_chunk_count: int
    upload_id: str
    upload_token: str
    upload_expires_at: float
    created_at: float
    received: int = 0
    chunks_received: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    completed_at: float | None = None
    status: str = "PROCESSING_UPLOAD"
    fail_reason: str | None = None
    processing_left: int = 0
    planned_failure: str | None = None
    post_id: str | None = None
    posted_privacy: str | None = None  # the level the post went out with (inbox: what the creator chose)

    @property
    def post_info(self) -> dict[str, Any] | None:
        info = self.body.get("post_info")
        return dict(info) if isinstance(info, dict) else None

    def expected_chunk_length(self) -> int:
        i = self.chunks_received
        return self.chunk_size if i < self.total_chunk_count - 1 else self.video_size - i * self.chunk_size


@dataclass(frozen=True)
class InitRecord:
    publish_id: str
    open_id: str
    mode: str
    body: dict[str, Any]  # the request body as received (post_info incl. is_aigc, source_info)


@dataclass(frozen=True)
class PostRecord:
    publish_id: str
    open_id: str
    mode: str
    post_info: dict[str, Any] | None  # as received at init (None for an inbox draft)
    sha256: str  # of the bytes uploaded
    size: int
    post_id: str
    privacy_level: str | None


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str
    status: int
    code: str  # error.code / OAuth error / "ok"; for uploads the HTTP reason


@dataclass(frozen=True)
class StatusFetch:
    publish_id: str
    status: str | None  # None when the fetch was refused


@dataclass
class Video:
    id: str
    open_id: str
    view_count: int = 0
    like_count: int = 0
    comment_count: int = 0
    share_count: int = 0
    create_time: int = field(default_factory=lambda: int(time.time()))
    title: str = ""
    duration: int = 8


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class _Answer:
    status: int
    payload: Any = None  # JSON
    raw: bytes | None = None
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "ok"


@dataclass
class _Injection:
    code: str
    http_status: int
    times: int
    message: str
    retry_after: float | None


class Emulator:
    """The emulated TikTok: users and their tokens, publishes, videos, knobs and what it saw."""

    def __init__(self, *, client_key: str = "emulator-client-key", client_secret: str = "emulator-client-secret",
                 clock: Callable[[], float] = time.monotonic, access_expires_in: int = 7200,
                 refresh_expires_in: int = 15552000) -> None:
        self.client_key, self.client_secret = client_key, client_secret
        self.url = "http://testserver"  # set by running_emulator
        self._lock = threading.RLock()
        self.reset(clock=clock, access_expires_in=access_expires_in, refresh_expires_in=refresh_expires_in)
        self.app = Starlette(routes=[
            Route("/v2/oauth/token/", self._route("token", self._token), methods=["POST"]),
            Route("/v2/post/publish/creator_info/query/", self._route("creator_info", self._creator_info),
                  methods=["POST"]),
            Route("/v2/post/publish/video/init/", self._route("init_direct", self._init_direct), methods=["POST"]),
            Route("/v2/post/publish/inbox/video/init/", self._route("init_inbox", self._init_inbox),
                  methods=["POST"]),
            Route("/v2/post/publish/status/fetch/", self._route("status", self._status), methods=["POST"]),
            Route("/v2/video/query/", self._route("video_query", self._video_query), methods=["POST"]),
            Route("/upload/", self._route("upload", self._upload), methods=["PUT"]),
        ])

    def reset(self, *, clock: Callable[[], float] = time.monotonic, access_expires_in: int = 7200,
              refresh_expires_in: int = 15552000) -> None:
        """Forget every user, publish, video and request and put every knob back to its default, so one
        running server can serve many tests (starting one costs more than the test)."""
        with self._lock:
            self._reset(clock, access_expires_in, refresh_expires_in)

    def _reset(self, clock: Callable[[], float], access_expires_in: int, refresh_expires_in: int) -> None:
        self.clock = clock
        self.access_expires_in, self.refresh_expires_in = access_expires_in, refresh_expires_in
        # knobs
        self.unaudited = False
        self.unaudited_user_cap = 5  # unaudited clients: at most 5 users posting in 24 h
        self.daily_post_cap = 15  # direct posts per user per 24 h (spam_risk_too_many_posts)
        self.pending_share_cap = 5  # inbox drafts not yet posted, per user per 24 h
        self.processing_fetches = 0  # status fetches a finished upload stays in processing
        self.video_duration_s: float | None = None  # a test's hint: the emulator cannot decode video
        self.upload_url_ttl_s = 3600.0
        self.init_per_minute, self.creator_info_per_minute, self.status_per_minute = 6, 20, 30
        self.rate_limit_retry_after: float | None = None  # Retry-After on the emulator's own 429s
        # TikTok's token endpoint has been seen refusing a refresh with HTTP 200 and error=invalid_grant; a
        # client must read the body whatever the status (set 400 to test the other way)
        self.oauth_error_http_status = 200
        # state
        self.users: dict[str, User] = {}
        self.publishes: dict[str, Publish] = {}
        self.videos: dict[str, Video] = {}
        self.inits: list[InitRecord] = []
        self.requests: list[RequestRecord] = []
        self.status_fetches: list[StatusFetch] = []
        self._access: dict[str, tuple[str, float]] = {}  # token -> (open_id, expires_at)
        self._refresh: dict[str, tuple[str, float]] = {}
        self._calls: dict[tuple[str, str], deque[float]] = {}
        self._injections: dict[str, deque[_Injection]] = {}
        self._breaks: dict[str, deque[str]] = {}
        self._failures: deque[tuple[str | None, str]] = deque()  # (publish_id or None for the next, reason)
        self._completed: list[str] = []  # publish ids in the order their uploads completed
        self._posted_drafts: list[str] = []
        self._ids = itertools.count(1)
        self._post_ids = itertools.count(7_300_000_000_000_000_001)

    # --- knobs ---------------------------------------------------------------------------------

    def add_user(self, open_id: str, access_token: str | None = None, refresh_token: str | None = None, *,
                 username: str | None = None, nickname: str | None = None,
                 privacy_level_options: tuple[str, ...] = PUBLIC_ACCOUNT_OPTIONS, comment_disabled: bool = False,
                 duet_disabled: bool = False, stitch_disabled: bool = False, max_video_post_duration_sec: int = 600,
                 scopes: frozenset[str] = DEFAULT_SCOPES) -> User:
        with self._lock:
            access = access_token or f"act.{secrets.token_hex(16)}"
            refresh = refresh_token or f"rft.{secrets.token_hex(16)}"
            creator = Creator(username=username or f"user_{open_id}", nickname=nickname or f"User {open_id}",
                              privacy_level_options=tuple(privacy_level_options), comment_disabled=comment_disabled,
                              duet_disabled=duet_disabled, stitch_disabled=stitch_disabled,
                              max_video_post_duration_sec=max_video_post_duration_sec)
            user = User(open_id, access, refresh, creator, frozenset(scopes))
            self.users[open_id] = user
            now = self.clock()
            self._access[access] = (open_id, now + self.access_expires_in)
            self._refresh[refresh] = (open_id, now + self.refresh_expires_in)
            return user

    def set_creator(self, open_id: str, **changes: Any) -> None:
        """Change what creator_info says (privacy_level_options, comment_disabled, max_video_post_duration_sec...)."""
        with self._lock:
            creator = self.users[open_id].creator
            for name, value in changes.items():
                if not hasattr(creator, name):
                    raise AttributeError(f"creator has no setting {name!r}")
                setattr(creator, name, tuple(value) if name == "privacy_level_options" else value)

    def expire_access_token(self, open_id: str) -> None:
        """Every access token of the user expires now (the refresh token still works)."""
        with self._lock:
            now = self.clock()
            for token, (owner, _) in list(self._access.items()):
                if owner == open_id:
                    self._access[token] = (owner, now - 1)

    def revoke_refresh_token(self, open_id: str) -> None:
        with self._lock:
            for token, (owner, _) in list(self._refresh.items()):
                if owner == open_id:
                    del self._refresh[token]

    def ban_user(self, open_id: str) -> None:
        """TikTok's TnS banned the user from posting (spam_risk_user_banned_from_posting)."""
        with self._lock:
            self.users[open_id].banned = True

    def fail_next(self, endpoint: str, code: str, http_status: int | None = None, times: int = 1, *,
                  message: str | None = None, retry_after: float | None = None) -> None:
        """The next ``times`` requests to ``endpoint`` are answered with this error before anything else is
        looked at. For "upload", ``code`` is only recorded: the answer is ``http_status`` (default 500)."""
        self._check_endpoint(endpoint)
        with self._lock:
            status = http_status if http_status is not None else self._default_status(endpoint, code)
            self._injections.setdefault(endpoint, deque()).append(
                _Injection(code, status, times, message or f"injected {code}", retry_after))

    def break_contract(self, endpoint: str, how: str, times: int = 1) -> None:
        """Spoil the next ``times`` answers of ``endpoint`` (after they were processed normally):
        ``drop:data.publish_id`` removes a field, ``set:data.status="DONE"`` sets one (JSON, else text),
        ``non_json`` replaces the body with HTML, ``status:206`` changes the HTTP status,
        ``header:Content-Range=bytes 0-1/9`` sets a header. Paths may index lists (``data.videos.0.id``)."""
        self._check_endpoint(endpoint)
        if not re.fullmatch(r"drop:.+|set:[^=]+=.*|non_json|status:\d{3}|header:[^=]+=.*", how):
            raise ValueError(f"unknown contract break {how!r}")
        with self._lock:
            self._breaks.setdefault(endpoint, deque()).extend([how] * times)

    def fail_publish(self, reason: str, publish_id: str | None = None) -> None:
        """The publish (or the next one whose processing ends) fails with ``reason`` (a fail_reason)."""
        with self._lock:
            self._failures.append((publish_id, reason))

    def creator_posts_draft(self, publish_id: str, privacy_level: str = "PUBLIC_TO_EVERYONE") -> str:
        """The creator opens the inbox notification and posts the draft: PUBLISH_COMPLETE. The post id."""
        with self._lock:
            pub = self.publishes[publish_id]
            if pub.mode != "inbox" or pub.status != "SEND_TO_USER_INBOX":
                raise ValueError(f"{publish_id} is not a draft waiting in the inbox ({pub.mode}, {pub.status})")
            pub.status = "PUBLISH_COMPLETE"
            pub.posted_privacy = privacy_level
            pub.post_id = self._new_video(pub.open_id)
            self._posted_drafts.append(publish_id)
            return pub.post_id

    def add_video(self, open_id: str, video_id: str | None = None, **counts: int) -> str:
        """A video the user already has on TikTok (for /v2/video/query/)."""
        with self._lock:
            vid = self._new_video(open_id, video_id)
            self.set_stats(vid, **counts)
            return vid

    def set_stats(self, video_id: str, **counts: int) -> None:
        with self._lock:
            video = self.videos[video_id]
            for name, value in counts.items():
                if name not in ("view_count", "like_count", "comment_count", "share_count", "create_time"):
                    raise AttributeError(f"no stat {name!r}")
                setattr(video, name, value)

    # --- inspection ------------------------------------------------------------------------------

    @property
    def posts(self) -> list[PostRecord]:
        """Posts that exist: direct posts whose last chunk arrived (and that did not fail), then inbox
        drafts the creator posted."""
        with self._lock:
            out = []
            direct = [pid for pid in self._completed if self.publishes[pid].mode == "direct"]
            for pid in [*direct, *self._posted_drafts]:
                pub = self.publishes[pid]
                if pub.post_id is None or pub.status == "FAILED":
                    continue
                out.append(PostRecord(pid, pub.open_id, pub.mode, pub.post_info, pub.sha.hexdigest(), pub.received,
                                      pub.post_id, pub.posted_privacy))
            return out

    def requests_to(self, endpoint: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    # --- request plumbing ------------------------------------------------------------------------

    def _check_endpoint(self, endpoint: str) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}: one of {ENDPOINTS}")

    def _default_status(self, endpoint: str, code: str) -> int:
        if endpoint == "upload":
            return 500
        if endpoint == "token":
            return 429 if code == "rate_limit_exceeded" else self.oauth_error_http_status
        if code == "ok":
            return 200
        if code == "rate_limit_exceeded":
            return 429
        if code in ("access_token_invalid", "scope_not_authorized"):
            return 401
        if code in ("invalid_param", "invalid_params", "invalid_publish_id",
                    "token_not_authorized_for_specified_publish_id"):
            return 400
        if code == "internal_error":
            return 500
        if endpoint == "creator_info" and code in ("spam_risk_too_many_posts", "spam_risk_user_banned_from_posting",
                                                   "reached_active_user_cap"):
            return 200  # documented: creator_info answers these with HTTP 200, intentionally
        return 403

    def _route(self, name: str, handler: Callable[[Request, bytes], _Answer]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                answer = self._injected(name) or self._answer(name, request, body, handler)
                answer = self._spoil(name, answer)
                self.requests.append(RequestRecord(name, answer.status, answer.code))
            if answer.raw is not None:
                content = answer.raw
            else:
                content = json.dumps(answer.payload).encode()
            return Response(content, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)
        return endpoint

    def _answer(self, name: str, request: Request, body: bytes, handler: Callable[[Request, bytes], _Answer]) -> _Answer:
        try:
            return handler(request, body)
        except _Refusal as refusal:
            return self._refusal_answer(name, refusal.status, refusal.code, refusal.message, refusal.headers)

    def _refusal_answer(self, name: str, status: int, code: str, message: str,
                        headers: dict[str, str] | None = None) -> _Answer:
        if name == "upload":
            return _Answer(status, raw=message.encode(), media_type="text/plain", headers=headers or {}, code=code)
        if name == "token":
            return _Answer(status, {"error": code, "error_description": message, "log_id": self._log_id()},
                           headers=headers or {}, code=code)
        return _Answer(status, {"data": {}, "error": {"code": code, "message": message, "log_id": self._log_id()}},
                       headers=headers or {}, code=code)

    def _injected(self, name: str) -> _Answer | None:
        queue = self._injections.get(name)
        if not queue:
            return None
        injection = queue[0]
        injection.times -= 1
        if injection.times <= 0:
            queue.popleft()
        headers = {"Retry-After": f"{injection.retry_after:g}"} if injection.retry_after is not None else {}
        if name == "upload":
            return _Answer(injection.http_status, raw=injection.message.encode(), media_type="text/plain",
                           headers=headers, code=injection.code)
        return self._refusal_answer(name, injection.http_status, injection.code, injection.message, headers)

    def _spoil(self, name: str, answer: _Answer) -> _Answer:
        queue = self._breaks.get(name)
        if not queue:
            return answer
        how = queue.popleft()
        if how == "non_json":
            return _Answer(answer.status, raw=b"<html><body>502 Bad Gateway</body></html>", media_type="text/html",
                           code="broken:non_json")
        kind, _, rest = how.partition(":")
        if kind == "status":
            answer.status = int(rest)
        elif kind == "header":
            header, _, value = rest.partition("=")
            answer.headers[header] = value
        else:
            path, _, value = rest.partition("=")
            *parents, last = path.split(".")
            node = answer.payload
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key: Any = int(last) if isinstance(node, list) else last
            if kind == "drop":
                del node[key]
            else:
                try:
                    node[key] = json.loads(value)
                except ValueError:
                    node[key] = value
        answer.code = f"broken:{how}"
        return answer

    def _ok(self, data: dict[str, Any]) -> _Answer:
        return _Answer(200, {"data": data, "error": {"code": "ok", "message": "", "log_id": self._log_id()}})

    def _log_id(self) -> str:
        return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(9).upper()}"

    # --- shared checks ---------------------------------------------------------------------------

    def _user(self, request: Request, *scopes: str) -> User:
        """The token's user, who must have granted one of ``scopes``."""
        match = re.fullmatch(r"Bearer (\S+)", request.headers.get("authorization", ""))
        entry = self._access.get(match.group(1)) if match else None
        if entry is None or entry[1] <= self.clock():
            raise _Refusal(401, "access_token_invalid", "The access token is invalid or not found in the request.")
        user = self.users[entry[0]]
        if not user.scopes & set(scopes):
            raise _Refusal(401, "scope_not_authorized", f"The user did not authorize {' or '.join(scopes)}.")
        return user

    def _throttle(self, name: str, request: Request, limit: int) -> None:
        token = request.headers.get("authorization", "")
        calls = self._calls.setdefault((name, token), deque())
        now = self.clock()
        while calls and calls[0] <= now - 60.0:
            calls.popleft()
        if len(calls) >= limit:
            headers = {"Retry-After": f"{self.rate_limit_retry_after:g}"} if self.rate_limit_retry_after else {}
            raise _Refusal(429, "rate_limit_exceeded", "The API rate limit was exceeded.", headers)
        calls.append(now)

    def _json_body(self, request: Request, body: bytes, code: str, *, allow_empty: bool = False) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        media, *params = [p.strip().lower() for p in content_type.split(";")]
        if media != "application/json" or any(p != "charset=utf-8" for p in params):
            raise _Refusal(400, code, f"Content-Type must be application/json; charset=UTF-8, got {content_type!r}")
        if allow_empty and not body.strip():
            return {}
        try:
            parsed = json.loads(body)
        except ValueError:
            raise _Refusal(400, code, "The request body is not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise _Refusal(400, code, "The request body must be a JSON object.")
        return parsed

    @staticmethod
    def _only(obj: dict[str, Any], allowed: set[str] | dict[str, Any], where: str) -> None:
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise _Refusal(400, "invalid_param", f"Unknown field(s) in {where}: {', '.join(unknown)}.")

    def _recent_inits(self, open_id: str, mode: str) -> list[Publish]:
        since = self.clock() - DAY_S
        return [p for p in self.publishes.values() if p.open_id == open_id and p.mode == mode and p.created_at > since]

    # --- endpoints -------------------------------------------------------------------------------

    def _token(self, request: Request, body: bytes) -> _Answer:
        status = self.oauth_error_http_status
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise _Refusal(status, "invalid_request", "Content-Type must be application/x-www-form-urlencoded.")
        try:
            form = {k: v for k, v in parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True).items()}
        except (ValueError, UnicodeDecodeError):
            raise _Refusal(status, "invalid_request", "The request body is not a form.") from None
        if any(len(v) != 1 for v in form.values()):
            raise _Refusal(status, "invalid_request", "A parameter is repeated.")
        fields = {k: v[0] for k, v in form.items()}
        if fields.get("client_key") != self.client_key or fields.get("client_secret") != self.client_secret:
            raise _Refusal(status, "invalid_client", "Client key or secret is incorrect.")
        if fields.get("grant_type") != "refresh_token":
            raise _Refusal(status, "unsupported_grant_type", "Only grant_type=refresh_token is emulated.")
        unknown = sorted(set(fields) - {"client_key", "client_secret", "grant_type", "refresh_token"})
        if unknown or not fields.get("refresh_token"):
            raise _Refusal(status, "invalid_request", f"Bad parameters: refresh_token missing or unknown {unknown}.")
        entry = self._refresh.get(fields["refresh_token"])
        now = self.clock()
        if entry is None or entry[1] <= now:
            raise _Refusal(status, "invalid_grant", "Refresh token is invalid or expired.")
        open_id = entry[0]
        del self._refresh[fields["refresh_token"]]  # rotation: the old refresh token is spent
        user = self.users[open_id]
        user.access_token, user.refresh_token = f"act.{secrets.token_hex(16)}", f"rft.{secrets.token_hex(16)}"
        self._access[user.access_token] = (open_id, now + self.access_expires_in)
        self._refresh[user.refresh_token] = (open_id, now + self.refresh_expires_in)
        return _Answer(200, {"access_token": user.access_token, "expires_in": self.access_expires_in,
                             "open_id": open_id, "refresh_expires_in": self.refresh_expires_in,
                             "refresh_token": user.refresh_token, "scope": ",".join(sorted(user.scopes)),
                             "token_type": "Bearer"})

    def _creator_info(self, request: Request, body: bytes) -> _Answer:
        user = self._user(request, "video.publish")
        self._throttle("creator_info", request, self.creator_info_per_minute)
        if self._json_body(request, body, "invalid_param", allow_empty=True):
            raise _Refusal(400, "invalid_param", "creator_info/query takes no fields.")
        if user.banned:
            raise _Refusal(200, "spam_risk_user_banned_from_posting", "The user is banned from making new posts.")
        if len(self._recent_inits(user.open_id, "direct")) >= self.daily_post_cap:
            raise _Refusal(200, "spam_risk_too_many_posts", "The daily post cap from the API is reached.")
        c = user.creator
        return self._ok({"creator_avatar_url": c.avatar_url, "creator_username": c.username,
                         "creator_nickname": c.nickname, "privacy_level_options": list(c.privacy_level_options),
                         "comment_disabled": c.comment_disabled, "duet_disabled": c.duet_disabled,
                         "stitch_disabled": c.stitch_disabled,
                         "max_video_post_duration_sec": c.max_video_post_duration_sec})

    def _source_info(self, body: dict[str, Any]) -> tuple[int, int, int]:
        source = body.get("source_info")
        if not isinstance(source, dict):
            raise _Refusal(400, "invalid_param", "source_info is required and must be an object.")
        if source.get("source") == "PULL_FROM_URL":
            raise _Refusal(403, "url_ownership_unverified", "No URL prefix or domain is verified for this app.")
        if source.get("source") != "FILE_UPLOAD":
            raise _Refusal(400, "invalid_param", f"source_info.source must be FILE_UPLOAD or PULL_FROM_URL, "
                                                 f"got {source.get('source')!r}.")
        self._only(source, {"source", "video_size", "chunk_size", "total_chunk_count"}, "source_info")
        values = []
        for name in ("video_size", "chunk_size", "total_chunk_count"):
            value = source.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Refusal(400, "invalid_param", f"source_info.{name} must be an integer, got {value!r}.")
            values.append(value)
        size, chunk, count = values
        problem = _chunk_rule_problem(size, chunk, count)
        if problem:
            raise _Refusal(400, "invalid_param", problem)
        return size, chunk, count

    def _post_info(self, body: dict[str, Any], user: User) -> dict[str, Any]:
        info = body.get("post_info")
        if not isinstance(info, dict):
            raise _Refusal(400, "invalid_param", "post_info is required and must be an object.")
        self._only(info, POST_INFO_FIELDS, "post_info")
        for name, kind in POST_INFO_FIELDS.items():
            value = info.get(name)
            if name in info and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise _Refusal(400, "invalid_param", f"post_info.{name} must be a {kind.__name__}, got {value!r}.")
        for name in REQUIRED_POST_INFO:
            if name not in info:
                raise _Refusal(400, "invalid_param", f"post_info.{name} is required.")
        title = info.get("title", "")
        if len(title.encode("utf-16-le")) // 2 > 2200:
            raise _Refusal(400, "invalid_param", "post_info.title is longer than 2200 UTF-16 runes.")
        if not 0 <= info.get("video_cover_timestamp_ms", 0) < 2 ** 31:
            raise _Refusal(400, "invalid_param", "post_info.video_cover_timestamp_ms is not an int32.")
        level = info.get("privacy_level")
        if level not in user.creator.privacy_level_options:
            raise _Refusal(403, "privacy_level_option_mismatch",
                           f"privacy_level {level!r} is not among the creator's privacy_level_options.")
        return info

    def _new_publish(self, user: User, mode: str, body: dict[str, Any], source: tuple[int, int, int]) -> _Answer:
        now = self.clock()
        n = next(self._ids)
        publish_id = f"v_pub_file~v2-1.{7_100_000_000 + n}" if mode == "direct" else f"v_inbox_file~v2.{7_200_000_000 + n}"
        pub = Publish(publish_id, user.open_id, mode, body, *source, upload_id=str(90000 + n),
                      upload_token=secrets.token_urlsafe(12), upload_expires_at=now + self.upload_url_ttl_s,
                      created_at=now)
        self.publishes[publish_id] = pub
        self.inits.append(InitRecord(publish_id, user.open_id, mode, json.loads(json.dumps(body))))
        upload_url = f"{self.url}/upload/?upload_id={pub.upload_id}&upload_token={pub.upload_token}"
        return self._ok({"publish_id": publish_id, "upload_url": upload_url})

    def _init_direct(self, request: Request, body: bytes) -> _Answer:
        user = self._user(request, "video.publish")
        self._throttle("init_direct", request, self.init_per_minute)
        parsed = self._json_body(request, body, "invalid_param")
        self._only(parsed, {"post_info", "source_info"}, "the body")
        info = self._post_info(parsed, user)
        source = self._source_info(parsed)
        if user.banned:
            raise _Refusal(403, "spam_risk_user_banned_from_posting", "The user is banned from making new posts.")
        if len(self._recent_inits(user.open_id, "direct")) >= self.daily_post_cap:
            raise _Refusal(403, "spam_risk_too_many_posts", "The daily post cap from the API is reached.")
        if self.unaudited:
            if not user.creator.private_account or info["privacy_level"] != "SELF_ONLY":
                raise _Refusal(403, "unaudited_client_can_only_post_to_private_accounts",
                               "Unaudited clients can only post to a private account.")
            since = self.clock() - DAY_S
            posters = {p.open_id for p in self.publishes.values() if p.mode == "direct" and p.created_at > since}
            if user.open_id not in posters and len(posters) >= self.unaudited_user_cap:
                raise _Refusal(403, "reached_active_user_cap", "The daily quota for active publishing users is reached.")
        return self._new_publish(user, "direct", parsed, source)

    def _init_inbox(self, request: Request, body: bytes) -> _Answer:
        user = self._user(request, "video.upload")
        self._throttle("init_inbox", request, self.init_per_minute)
        parsed = self._json_body(request, body, "invalid_param")
        self._only(parsed, {"source_info"}, "the body")
        source = self._source_info(parsed)
        if user.banned:
            raise _Refusal(403, "spam_risk_user_banned_from_posting", "The user is banned from making new posts.")
        pending = [p for p in self._recent_inits(user.open_id, "inbox") if p.status != "PUBLISH_COMPLETE"]
        if len(pending) >= self.pending_share_cap:
            raise _Refusal(403, "spam_risk_too_many_pending_share", "Too many pending shares in 24 hours.")
        return self._new_publish(user, "inbox", parsed, source)

    def _upload(self, request: Request, body: bytes) -> _Answer:
        upload_id = request.query_params.get("upload_id")
        pub = next((p for p in self.publishes.values() if p.upload_id == upload_id), None)
        if pub is None or request.query_params.get("upload_token") != pub.upload_token:
            raise _Refusal(404, "Not Found", "No valid upload task for this upload_url.")
        held = {"Content-Range": f"bytes 0-{pub.received - 1}/{pub.video_size}"} if pub.received else {}
        if self.clock() > pub.upload_expires_at:
            raise _Refusal(403, "Forbidden", "The upload_url has expired.", held)
        if pub.completed_at is not None:
            raise _Refusal(416, "Requested Range Not Satisfiable", "The upload is already complete.", held)
        if request.headers.get("content-type") not in UPLOAD_TYPES:
            raise _Refusal(400, "Bad Request", f"Content-Type must be one of {', '.join(UPLOAD_TYPES)}.", held)
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) != len(body):
            raise _Refusal(400, "Bad Request", "Content-Length does not match the body.", held)
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", request.headers.get("content-range", ""))
        if not match:
            raise _Refusal(400, "Bad Request", "Content-Range must read 'bytes FIRST-LAST/TOTAL'.", held)
        first, last, total = (int(g) for g in match.groups())
        if total != pub.video_size:
            raise _Refusal(400, "Bad Request", f"Content-Range total {total} is not the video_size {pub.video_size}.",
                           held)
        if first != pub.received:
            raise _Refusal(416, "Requested Range Not Satisfiable",
                           f"Content-Range starts at {first}; the next byte expected is {pub.received}.", held)
        expected = pub.expected_chunk_length()
        if last - first + 1 != expected or len(body) != expected:
            raise _Refusal(400, "Bad Request", f"Chunk {pub.chunks_received + 1} of {pub.total_chunk_count} must be "
                                               f"{expected} bytes, got {last - first + 1} ({len(body)} sent).", held)
        pub.sha.update(body)
        pub.received += len(body)
        pub.chunks_received += 1
        headers = {"Content-Range": f"bytes 0-{pub.received - 1}/{pub.video_size}"}
        if pub.chunks_received < pub.total_chunk_count:
            return _Answer(206, raw=b"", media_type="text/plain", headers=headers, code="Partial Content")
        self._complete(pub)
        return _Answer(201, raw=b"", media_type="text/plain", headers=headers, code="Created")

    def _complete(self, pub: Publish) -> None:
        """The last chunk arrived: the post exists from now on and processing starts."""
        pub.completed_at = self.clock()
        pub.processing_left = self.processing_fetches
        self._completed.append(pub.publish_id)
        if pub.mode == "direct":
            pub.post_id = self._new_video(pub.open_id)
            pub.posted_privacy = (pub.post_info or {}).get("privacy_level")
            for item in list(self._failures):
                if item[0] in (None, pub.publish_id):
                    self._failures.remove(item)
                    pub.planned_failure = item[1]
                    break
            max_s = self.users[pub.open_id].creator.max_video_post_duration_sec
            if pub.planned_failure is None and self.video_duration_s is not None and self.video_duration_s > max_s:
                pub.planned_failure = "duration_check_failed"

    def _status(self, request: Request, body: bytes) -> _Answer:
        try:
            user = self._user(request, "video.upload", "video.publish")
            self._throttle("status", request, self.status_per_minute)
            parsed = self._json_body(request, body, "invalid_param")
            self._only(parsed, {"publish_id"}, "the body")
            publish_id = parsed.get("publish_id")
            if not isinstance(publish_id, str) or not publish_id:
                raise _Refusal(400, "invalid_param", "publish_id must be a non-empty string.")
            pub = self.publishes.get(publish_id)
            if pub is None:
                raise _Refusal(400, "invalid_publish_id", "The publish_id does not exist.")
            if pub.open_id != user.open_id:
                raise _Refusal(400, "token_not_authorized_for_specified_publish_id",
                               "The access_token is not authorized for this publish_id.")
        except _Refusal:
            asked = _safe_publish_id(body)
            self.status_fetches.append(StatusFetch(asked if isinstance(asked, str) else "", None))
            raise
        self._advance(pub)
        data: dict[str, Any] = {"status": pub.status, "uploaded_bytes": pub.received, "publicaly_available_post_id": []}
        if pub.status == "FAILED":
            data["fail_reason"] = pub.fail_reason
        if pub.status == "PUBLISH_COMPLETE" and pub.posted_privacy == "PUBLIC_TO_EVERYONE" and pub.post_id:
            data["publicaly_available_post_id"] = [int(pub.post_id)]  # int64 in TikTok's JSON
        self.status_fetches.append(StatusFetch(pub.publish_id, pub.status))
        return self._ok(data)

    def _advance(self, pub: Publish) -> None:
        """One status fetch's worth of processing after the upload completed."""
        if pub.completed_at is None or pub.status in ("PUBLISH_COMPLETE", "FAILED", "SEND_TO_USER_INBOX"):
            return
        if pub.processing_left > 0:
            pub.processing_left -= 1
            return
        if pub.mode == "inbox":
            pub.status = "SEND_TO_USER_INBOX"
        elif pub.planned_failure:
            pub.status, pub.fail_reason = "FAILED", pub.planned_failure
            self.videos.pop(pub.post_id or "", None)
        else:
            pub.status = "PUBLISH_COMPLETE"

    def _video_query(self, request: Request, body: bytes) -> _Answer:
        user = self._user(request, "video.list")
        fields = request.query_params.get("fields", "")
        wanted = [f for f in fields.split(",") if f]
        if not wanted or any(f not in VIDEO_FIELDS for f in wanted):
            raise _Refusal(400, "invalid_params", f"fields must name Video Object fields, got {fields!r}.")
        parsed = self._json_body(request, body, "invalid_params")
        filters = parsed.get("filters")
        if set(parsed) != {"filters"} or not isinstance(filters, dict) or set(filters) != {"video_ids"}:
            raise _Refusal(400, "invalid_params", "The body must be {\"filters\": {\"video_ids\": [...]}}.")
        ids = filters["video_ids"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= 20 or not all(isinstance(i, str) and i for i in ids):
            raise _Refusal(400, "invalid_params", "video_ids must list 1 to 20 video id strings.")
        videos = []
        for vid in ids:
            video = self.videos.get(vid)
            if video is None or video.open_id != user.open_id:
                continue
            row = {"id": video.id, "create_time": video.create_time, "view_count": video.view_count,
                   "like_count": video.like_count, "comment_count": video.comment_count,
                   "share_count": video.share_count, "title": video.title, "duration": video.duration,
                   "share_url": f"https://www.tiktok.com/@{self.users[video.open_id].creator.username}/video/{video.id}"}
            videos.append({k: v for k, v in row.items() if k in wanted})
        return self._ok({"videos": videos})

    def _new_video(self, open_id: str, video_id: str | None = None) -> str:
        vid = video_id or str(next(self._post_ids))
        self.videos[vid] = Video(vid, open_id)
        return vid


def _safe_publish_id(body: bytes) -> object:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get("publish_id") if isinstance(parsed, dict) else None


def _chunk_rule_problem(size: int, chunk: int, count: int) -> str | None:
    """TikTok's chunk restrictions (media transfer guide), written out independently of the client's plan."""
    if size <= 0 or chunk <= 0 or count <= 0:
        return "video_size, chunk_size and total_chunk_count must be positive."
    if size > MAX_VIDEO_SIZE:
        return f"video_size {size} is over the 4 GB limit."
    if size < 5 * MB:
        return None if chunk == size and count == 1 else "A video under 5 MB must be uploaded whole."
    if not 5 * MB <= chunk <= 64 * MB:
        return f"chunk_size {chunk} must be between 5 MB and 64 MB."
    if count != size // chunk:
        return f"total_chunk_count must be video_size / chunk_size rounded down ({size // chunk}), got {count}."
    if not 1 <= count <= 1000:
        return f"total_chunk_count {count} must be between 1 and 1000."
    if size > 64 * MB and count < 2:
        return "A video over 64 MB must be uploaded in several chunks."
    if size - (count - 1) * chunk > 128 * MB:
        return "The final chunk may be at most 128 MB."
    return None


@contextmanager
def running_emulator(emulator: Emulator | None = None, **kwargs: Any) -> Iterator[Emulator]:
    """Serve an Emulator with uvicorn on 127.0.0.1 and a free port (``emu.url``) in a background thread."""
    emu = emulator if emulator is not None else Emulator(**kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without, each small answer waits ~40 ms for a delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    emu.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(emu.app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tiktok-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the TikTok emulator did not start")
        time.sleep(0.01)
    try:
        yield emu
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
