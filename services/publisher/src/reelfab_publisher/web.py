"""The review page: an operator logs in with a review token, watches each rendered video, edits its title
and hashtags, chooses the account and the privacy level (from the account's creator_info options, no
default), consents to the post, and approves or rejects it; the takedown queue lists posts whose subject
withdrew consent. Everything goes through ``Desk`` (desk.py); this module only serves pages.

Security: logging in trades the review token for a session of the desk's (``Desk.start_session``: a random
session id, stored by the desk as a hash); the token itself is never kept, in a cookie or anywhere else.
The session is a cookie (HttpOnly, SameSite=Strict, Path=base_path) holding the session id and its issue
time, signed with HMAC-SHA256 under ``secret``; every request asks the desk again whose session it is
(``Desk.session``), so a session ended by logout (``Desk.end_session``), expired, or whose token was
revoked or replaced stops working at once, wherever a copy of its cookie is. Every form post carries a
CSRF field (an HMAC of the session id and the action). Pages are rendered by Jinja2 with autoescaping;
scripts and styles come from this app only (a strict Content-Security-Policy, no inline script)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .desk import (
    OPEN_STATES,
    WAITING,
    AccountChoice,
    Approval,
    Desk,
    NotFound,
    ReviewError,
    ReviewItem,
)

SESSION_COOKIE = "reelfab_review"
FLASH_COOKIE = "reelfab_review_flash"
SESSION_MAX_AGE_S = 12 * 3600  # an operator logs in again after a working day
TITLE_MAX_CHARS = 2200  # TikTok's limit for a video's caption
TOKEN_MAX_CHARS = 4096
SESSION_ID_MAX_CHARS = 512  # a session id longer than this is no session of the desk's: not looked up
HASHTAG_MAX_CHARS = 100
MAX_BODY_BYTES = 256 * 1024

# TikTok's privacy levels, as the review page names them (an unknown one is shown as it came)
PRIVACY_LABELS = {
    "PUBLIC_TO_EVERYONE": "Everyone",
    "MUTUAL_FOLLOW_FRIENDS": "Friends (followers you follow back)",
    "FOLLOWER_OF_CREATOR": "Followers",
    "SELF_ONLY": "Only me",
}
PRIVATE_LEVEL = "SELF_ONLY"

_HERE = Path(__file__).parent
_STATIC = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",  # pages carry CSRF fields; the video is served fresh each time
}
_HASHTAG_SPLIT = re.compile(r"[\s,]+")
# the desk's rule for a hashtag: letters, digits and underscores of any script, 1 to 100 of them
_HASHTAG = re.compile(rf"\w{{1,{HASHTAG_MAX_CHARS}}}")


# --- signing ----------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class _Signer:
    secret: bytes

    def mac(self, purpose: str, *parts: str) -> str:
        message = "\x00".join((purpose, *parts)).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    # the MAC's purpose names what the cookie holds: a cookie of the days when it held the review token
    # (purpose "session") does not open as a session id
    _SESSION = "session-id"

    def seal_session(self, session_id: str, now: float | None = None) -> str:
        """The session cookie's value: the desk's session id (never the review token) and the issue time."""
        payload = f"{_b64(session_id.encode())}.{int(now if now is not None else time.time())}"
        return f"{payload}.{self.mac(self._SESSION, payload)}"

    def open_session(self, value: str | None, now: float | None = None) -> str | None:
        """The session id in a session cookie, None when it is missing, forged or too old."""
        if not value or value.count(".") != 2:
            return None
        encoded, issued, mac = value.split(".")
        if (
            not hmac.compare_digest(mac, self.mac(self._SESSION, f"{encoded}.{issued}"))
            or not issued.isdigit()
        ):
            return None
        age = (now if now is not None else time.time()) - int(issued)
        if not -60 <= age <= SESSION_MAX_AGE_S:
            return None
        try:
            session_id = _unb64(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return session_id if 0 < len(session_id) <= SESSION_ID_MAX_CHARS else None

    def csrf(self, session_id: str, action: str) -> str:
        return self.mac("csrf", session_id, action)

    def seal_flash(self, text: str) -> str:
        payload = _b64(text.encode())
        return f"{payload}.{self.mac('flash', payload)}"

    def open_flash(self, value: str | None) -> str | None:
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self.mac("flash", payload)):
            return None
        try:
            return _unb64(payload).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None


# --- helpers for the templates --------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s"


def _privacy_label(level: str | None) -> str:
    if not level:
        return ""
    return PRIVACY_LABELS.get(level, level)


def _web_url(url: str | None) -> str | None:
    """A share URL safe to link to (http or https only; anything else is shown as text)."""
    if url and re.match(r"^https?://", url, re.IGNORECASE):
        return url
    return None


def _account_label(account: AccountChoice) -> str:
    who = f"{account.nickname} ({account.name})" if account.nickname else account.name
    return f"{who} · {account.platform} · {account.mode}"


class HashtagError(ValueError):
    """Hashtags the page refuses (the message names them, for the operator)."""


def _shown(tag: str, limit: int = 40) -> str:
    return f"“{tag if len(tag) <= limit else tag[:limit] + '…'}”"


def parse_hashtags(text: str) -> tuple[str, ...]:
    """Hashtags as an operator types them: space or comma separated, '#' optional; empties and repeats
    dropped. Each must be 1 to 100 letters, digits or underscores (any script: the desk's rule); anything
    else (punctuation, markup, quotes, a '#' inside) raises HashtagError naming the hashtags refused."""
    tags: list[str] = []
    bad: list[str] = []
    for part in _HASHTAG_SPLIT.split(text):
        tag = part.strip().lstrip("#").strip()
        if not tag:
            continue
        if not _HASHTAG.fullmatch(tag):
            if tag not in bad:
                bad.append(tag)
        elif tag not in tags:
            tags.append(tag)
    if bad:
        named = ", ".join(_shown(tag) for tag in bad[:5]) + (
            f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        )
        which = f"The hashtag {named} is" if len(bad) == 1 else f"The hashtags {named} are"
        raise HashtagError(
            f"{which} not allowed: a hashtag is 1 to {HASHTAG_MAX_CHARS} letters, digits or underscores "
            "(no spaces, punctuation, quotes or markup)."
        )
    return tuple(tags)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _checked(form: FormData, name: str) -> bool:
    return _field(form, name) in ("on", "yes", "true", "1")


class _SecurityHeaders:
    """Adds the headers every response of the review page carries (unless a handler set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class _Session:
    session_id: str  # the desk's (from the cookie); the review token is not kept after login
    operator: str


class _ReviewPage:
    def __init__(self, desk: Desk, secret: bytes, base_path: str) -> None:
        if len(secret) < 16:
            raise ValueError("the review page's secret must be at least 16 bytes")
        base = base_path.rstrip("/")
        if base and not base.startswith("/"):
            raise ValueError(f"base_path must start with '/': {base_path!r}")
        self.desk = desk
        self.signer = _Signer(secret)
        self.base = base
        self.cookie_path = base or "/"
        self.env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(["html"], default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["duration"] = _duration
        self.env.filters["privacy"] = _privacy_label
        self.env.filters["web_url"] = _web_url
        self.env.filters["account_label"] = _account_label
        self.env.globals["base"] = base
        self.env.globals["job_url"] = self.job_url
        self.env.globals["title_max"] = TITLE_MAX_CHARS
        self.env.globals["privacy_labels"] = PRIVACY_LABELS

    # --- urls, rendering ----------------------------------------------------------------------------------

    def job_url(self, job_id: str, action: str = "") -> str:
        return f"{self.base}/jobs/{quote(job_id, safe='')}{'/' + action if action else ''}"

    def takedown_url(self, post_id: str) -> str:
        return f"{self.base}/takedowns/{quote(post_id, safe='')}/done"

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        session = context["session"]
        context["csrf_logout"] = (
            self.signer.csrf(session.session_id, "logout") if isinstance(session, _Session) else ""
        )
        context.setdefault("flash", None)
        context.setdefault("error", None)
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def error_page(
        self, status_code: int, title: str, message: str, session: _Session | None
    ) -> HTMLResponse:
        return self.render("error.html", status_code, title=title, message=message, session=session)

    def redirect(self, url: str, flash: str | None = None) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        if flash:
            response.set_cookie(
                FLASH_COOKIE, self.signer.seal_flash(flash), max_age=120, path=self.cookie_path,
                httponly=True, samesite="strict",
            )  # fmt: skip
        return response

    def take_flash(self, request: Request, response: Response, flash: str | None) -> None:
        if flash is not None or FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=self.cookie_path, httponly=True, samesite="strict")

    # --- sessions -----------------------------------------------------------------------------------------

    async def session(self, request: Request) -> _Session | None:
        session_id = self.signer.open_session(request.cookies.get(SESSION_COOKIE))
        if session_id is None:
            return None
        operator = await self.desk.session(session_id)
        if operator is None:  # logged out, expired, or its operator's token revoked or replaced
            return None
        return _Session(session_id, operator)

    def to_login(self, request: Request) -> Response:
        target = f"{self.base}/login"
        path = request.url.path
        if path != f"{self.base}/" and self._safe_next(path):
            target += f"?next={quote(path, safe='/')}"
        response = RedirectResponse(target, status_code=303)
        if SESSION_COOKIE in request.cookies:  # forged, expired or revoked: forget it
            response.delete_cookie(SESSION_COOKIE, path=self.cookie_path, httponly=True, samesite="strict")
        return response

    def _safe_next(self, target: str | None) -> bool:
        return bool(
            target
            and target.startswith(f"{self.base}/")
            and "//" not in target
            and "\\" not in target
            and not target.startswith(f"{self.base}/login")
            and re.fullmatch(r"[A-Za-z0-9_.~%/-]*", target)
        )

    def check_csrf(self, session: _Session, form: FormData, action: str) -> bool:
        sent = _field(form, "csrf") or ""
        return hmac.compare_digest(sent, self.signer.csrf(session.session_id, action))

    def forbidden(self, session: _Session) -> HTMLResponse:
        return self.error_page(
            403, "Form refused",
            "This form was not sent from this review page's own session (CSRF check). Reload the page and try again.",
            session,
        )  # fmt: skip

    def unauthorised(self) -> HTMLResponse:
        return self.render(
            "login.html",
            401,
            error="Log in first: no session, or it ended (logged out, expired, or its token revoked).",
            next=None,
        )

    # --- login ----------------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        next_target = request.query_params.get("next")
        next_target = next_target if self._safe_next(next_target) else None
        if request.method == "GET":
            if await self.session(request) is not None:
                return RedirectResponse(next_target or f"{self.base}/", status_code=303)
            return self.render("login.html", next=next_target)
        form = await request.form(max_files=0, max_fields=8)
        token = (_field(form, "token") or "").strip()
        posted_next = _field(form, "next")
        next_target = posted_next if self._safe_next(posted_next) else None
        started = await self.desk.start_session(token) if token and len(token) <= TOKEN_MAX_CHARS else None
        if started is None:
            return self.render("login.html", 401, error="Unknown or revoked token.", next=next_target)
        session_id, _operator = started
        previous = self.signer.open_session(request.cookies.get(SESSION_COOKIE))
        if previous is not None and not hmac.compare_digest(previous, session_id):
            await self.desk.end_session(previous)  # this browser's earlier session: one at a time
        response = RedirectResponse(next_target or f"{self.base}/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, self.signer.seal_session(session_id), max_age=SESSION_MAX_AGE_S,
            path=self.cookie_path, httponly=True, samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.session(request)
        if session is not None:
            form = await request.form(max_files=0, max_fields=8)
            if not self.check_csrf(session, form, "logout"):
                return self.forbidden(session)
            await self.desk.end_session(session.session_id)  # every copy of the cookie stops working
        response = RedirectResponse(f"{self.base}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=self.cookie_path, httponly=True, samesite="strict")
        return response

    # --- pages ------------------------------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        flash = self.signer.open_flash(request.cookies.get(FLASH_COOKIE))
        waiting = await self.desk.waiting()
        recent = await self.desk.recent(50)
        takedowns = await self.desk.takedowns(include_done=False)
        response = self.render(
            "queue.html", session=session, flash=flash, waiting=waiting, recent=recent,
            open_takedowns=len(takedowns),
        )  # fmt: skip
        self.take_flash(request, response, flash)
        return response

    async def job(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        job_id = str(request.path_params["job_id"])
        try:
            item = await self.desk.item(job_id)
        except NotFound as exc:
            return self.error_page(404, "No such job", str(exc) or f"no job {job_id!r}", session)
        return await self.job_page(session, item)

    async def job_page(
        self,
        session: _Session,
        item: ReviewItem,
        *,
        status_code: int = 200,
        error: str | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> HTMLResponse:
        accounts = await self.desk.accounts() if item.status == WAITING else []
        form = {
            "title": item.title,
            "hashtags": " ".join(item.hashtags),
            "account": "",
            "privacy_level": "",
            "disable_comment": False,
            "disable_duet": False,
            "disable_stitch": False,
            "brand_content_toggle": False,
            "brand_organic_toggle": False,
            "cover_timestamp_ms": "1000",
            "reason": "",
        }
        form.update(values or {})
        return self.render(
            "job.html", status_code, session=session, item=item, accounts=accounts, form=form, error=error,
            is_open=item.status in OPEN_STATES, is_waiting=item.status == WAITING,
            too_long={a.name for a in accounts if a.max_duration_s is not None and item.duration_s > a.max_duration_s},
            csrf_approve=self.signer.csrf(session.session_id, f"approve:{item.job_id}"),
            csrf_reject=self.signer.csrf(session.session_id, f"reject:{item.job_id}"),
        )  # fmt: skip

    async def video(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.unauthorised()
        job_id = str(request.path_params["job_id"])
        try:
            path = await self.desk.video_path(job_id)
        except NotFound as exc:
            return self.error_page(404, "No such video", str(exc) or f"no job {job_id!r}", session)
        if not path.is_file():
            return self.error_page(
                404, "No such video", f"the rendered file of {job_id} is not here", session
            )
        return FileResponse(path, media_type="video/mp4", headers={"cache-control": "no-store"})

    # --- decisions ----------------------------------------------------------------------------------------

    async def approve(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.unauthorised()
        job_id = str(request.path_params["job_id"])
        form = await request.form(max_files=0, max_fields=32)
        if not self.check_csrf(session, form, f"approve:{job_id}"):
            return self.forbidden(session)
        try:
            item = await self.desk.item(job_id)
        except NotFound as exc:
            return self.error_page(404, "No such job", str(exc) or f"no job {job_id!r}", session)

        title = (_field(form, "title") or "").replace("\r\n", "\n").strip()
        hashtags_text = _field(form, "hashtags") or ""
        account_name = (_field(form, "account") or "").strip()
        privacy = (_field(form, "privacy_level") or "").strip()
        toggles = {
            name: _checked(form, name)
            for name in ("disable_comment", "disable_duet", "disable_stitch", "brand_content_toggle",
                         "brand_organic_toggle")
        }  # fmt: skip
        cover_text = (_field(form, "cover_timestamp_ms") or "1000").strip()
        values: dict[str, Any] = {
            "title": title, "hashtags": hashtags_text, "account": account_name, "privacy_level": privacy,
            "cover_timestamp_ms": cover_text, **toggles,
        }  # fmt: skip

        async def refuse(message: str, status_code: int = 400) -> HTMLResponse:
            return await self.job_page(session, item, status_code=status_code, error=message, values=values)

        if not _checked(form, "consent"):
            return await refuse(
                "Tick “I consent to post this video” to approve it: nothing is posted without it."
            )
        if not account_name:
            return await refuse("Choose the account to post to.")
        if not privacy:
            return await refuse("Choose who can see the video (privacy level): there is no default.")
        if len(title) > TITLE_MAX_CHARS:
            return await refuse(f"The title is {len(title)} characters long; at most {TITLE_MAX_CHARS}.")
        try:
            hashtags = parse_hashtags(hashtags_text)
        except HashtagError as exc:
            return await refuse(str(exc))
        if not cover_text.isdigit() or (item.duration_s > 0 and int(cover_text) > item.duration_s * 1000):
            return await refuse("The cover frame must be a whole number of milliseconds within the video.")
        if toggles["brand_content_toggle"] and privacy == PRIVATE_LEVEL:
            return await refuse(
                "Branded content cannot be posted as “Only me”: choose another privacy level."
            )
        account = next((a for a in await self.desk.accounts() if a.name == account_name), None)
        if account is not None:  # what the creator turned off stays off (the desk refuses unknown accounts)
            toggles["disable_comment"] = toggles["disable_comment"] or account.comment_disabled
            toggles["disable_duet"] = toggles["disable_duet"] or account.duet_disabled
            toggles["disable_stitch"] = toggles["disable_stitch"] or account.stitch_disabled
        approval = Approval(
            account=account_name,
            privacy_level=privacy,
            title=title,
            hashtags=hashtags,
            cover_timestamp_ms=int(cover_text),
            **toggles,
        )
        try:
            done = await self.desk.approve(job_id, approval, actor=session.operator)
        except NotFound as exc:
            return await refuse(str(exc) or f"no job {job_id!r}", 404)
        except ReviewError as exc:
            return await refuse(str(exc) or "the desk refused the approval")
        where = f"{account.nickname or account.name}" if account is not None else account_name
        return self.redirect(
            f"{self.base}/",
            f"Approved {done.job_id} for {where} ({_privacy_label(privacy)}); the poster takes it from here.",
        )

    async def reject(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.unauthorised()
        job_id = str(request.path_params["job_id"])
        form = await request.form(max_files=0, max_fields=8)
        if not self.check_csrf(session, form, f"reject:{job_id}"):
            return self.forbidden(session)
        try:
            item = await self.desk.item(job_id)
        except NotFound as exc:
            return self.error_page(404, "No such job", str(exc) or f"no job {job_id!r}", session)
        reason = (_field(form, "reason") or "").strip()
        if not reason:
            return await self.job_page(
                session,
                item,
                status_code=400,
                error="Say why the video is rejected (a reason is required).",
            )
        try:
            done = await self.desk.reject(job_id, reason, actor=session.operator)
        except NotFound as exc:
            return await self.job_page(
                session, item, status_code=404, error=str(exc), values={"reason": reason}
            )
        except ReviewError as exc:
            return await self.job_page(
                session, item, status_code=400, error=str(exc), values={"reason": reason}
            )
        return self.redirect(f"{self.base}/", f"Rejected {done.job_id}.")

    # --- takedowns --------------------------------------------------------------------------------------------

    async def takedowns(
        self, request: Request, *, status_code: int = 200, error: str | None = None
    ) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        show_done = request.query_params.get("done") == "1"
        flash = self.signer.open_flash(request.cookies.get(FLASH_COOKIE))
        items = await self.desk.takedowns(include_done=show_done)
        response = self.render(
            "takedowns.html", status_code, session=session, flash=flash, error=error, takedowns=items,
            show_done=show_done, takedown_url=self.takedown_url,
            csrf_done={t.post_id: self.signer.csrf(session.session_id, f"takedown:{t.post_id}") for t in items},
        )  # fmt: skip
        self.take_flash(request, response, flash)
        return response

    async def takedown_done(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.unauthorised()
        post_id = str(request.path_params["post_id"])
        form = await request.form(max_files=0, max_fields=8)
        if not self.check_csrf(session, form, f"takedown:{post_id}"):
            return self.forbidden(session)
        note = (_field(form, "note") or "").strip()
        if not note:
            return await self.takedowns(
                request, status_code=400, error="Say what was done (a note is required)."
            )
        try:
            await self.desk.takedown_done(post_id, actor=session.operator, note=note)
        except NotFound as exc:
            return await self.takedowns(
                request, status_code=404, error=str(exc) or f"no takedown for {post_id!r}"
            )
        except ReviewError as exc:
            return await self.takedowns(request, status_code=400, error=str(exc))
        return self.redirect(f"{self.base}/takedowns", f"Takedown of post {post_id} marked done.")

    # --- the rest -------------------------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        if name not in _STATIC:
            return self.error_page(404, "Not found", "no such file", None)
        return FileResponse(_HERE / "static" / name, media_type=_STATIC[name])

    async def to_queue(self, _: Request) -> Response:
        return RedirectResponse(f"{self.base}/", status_code=307)

    async def failed(self, request: Request, exc: Exception) -> Response:
        # the exception itself is logged by the server (Starlette re-raises it after this page is sent)
        return self.error_page(
            500,
            "The review desk failed",
            "Something went wrong behind the page; try again in a moment.",
            None,
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return self.error_page(405, "Not allowed", "That method is not allowed here.", None)
        return self.error_page(404, "Not found", "There is no such page on the review desk.", None)

    def routes(self) -> list[BaseRoute]:
        b = self.base
        routes: list[BaseRoute] = [
            Route(f"{b}/", self.queue, methods=["GET"]),
            Route(f"{b}/login", self.login, methods=["GET", "POST"]),
            Route(f"{b}/logout", self.logout, methods=["POST"]),
            Route(f"{b}/jobs/{{job_id}}", self.job, methods=["GET"]),
            Route(f"{b}/jobs/{{job_id}}/video", self.video, methods=["GET"]),
            Route(f"{b}/jobs/{{job_id}}/approve", self.approve, methods=["POST"]),
            Route(f"{b}/jobs/{{job_id}}/reject", self.reject, methods=["POST"]),
            Route(f"{b}/takedowns", self.takedowns, methods=["GET"]),
            Route(f"{b}/takedowns/{{post_id}}/done", self.takedown_done, methods=["POST"]),
            Route(f"{b}/static/{{name}}", self.static, methods=["GET"]),
        ]
        if b:
            routes.append(Route(b, self.to_queue, methods=["GET"]))
        return routes


def review_app(desk: Desk, *, secret: bytes, base_path: str = "/review") -> Starlette:
    """The review page as an ASGI app. Its routes carry ``base_path`` in full (``/review/jobs/{job_id}``),
    so the service hands it every request under base_path with the path as it came (do not wrap it in a
    Starlette ``Mount``, which would strip the prefix). ``secret`` (at least 16 bytes) signs the session
    cookie and the CSRF fields: keep it stable across restarts, or every operator logs in again."""
    page = _ReviewPage(desk, secret, base_path)
    not_found: Callable[[Request, Exception], Awaitable[Response]] = page.not_found
    failed: Callable[[Request, Exception], Awaitable[Response]] = page.failed
    return Starlette(
        routes=page.routes(),
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={404: not_found, 405: not_found, 500: failed},
        max_body_size=MAX_BODY_BYTES,
    )
