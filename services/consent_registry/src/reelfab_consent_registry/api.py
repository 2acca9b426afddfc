"""The registry's HTTP API: each route is one use case of ``Registry`` (one transaction), behind
bearer tokens (``tokens``): admin writes and reads, reader reads and asks for checks.

Bad input is a 4xx, never a 5xx: request validation and refusals are 422, an unknown subject 404,
a state conflict 409, erased data 410, an oversized upload 413. Every error body is
``{"error": <class>, "detail": <message>}`` (validation errors add ``errors``). Requests are
authenticated before their body is read, and bodies are limited per route while they stream in."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelfab.bus.outage import outage_of
from reelfab.consent.decision import PURPOSES, ConsentRequest
from reelfab.consent.lease import LeaseTerms, public_key_text
from reelfab.consent.lease import Scope as ConsentScope
from reelfab.errors import DependencyUnavailable
from reelfab.identifiers import IDENTIFIER_PATTERN
from reelfab.version import __version__

from . import audit, keys, tokens
from .crypto import ErasedError
from .errors import NotFound, Refused, RegistryError, TooLarge
from .registry import Registry, declared_size, too_many_pixels

# -- limits ----------------------------------------------------------------------------------------

JSON_BODY_LIMIT = 1024 * 1024  # JSON requests (not /check, which may carry an image)
FORM_ALLOWANCE = 64 * 1024  # multipart framing and form fields beside an upload
MAX_LIST = 50  # platforms, tags, territories per consent
CONSUME_SKEW_S = 300  # a consuming check counts today's uses: its `at` must be now
_CHUNK = 64 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_PRINCIPAL = "reelfab.consent.principal"
_UPLOAD_ROUTE = re.compile(r"^/subjects/[^/]+/(images|consents)$")
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

# -- input types -----------------------------------------------------------------------------------

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$"  # platforms and template tags
TERRITORY_PATTERN = r"^[A-Za-z]{2}$"  # ISO 3166-1 alpha-2, stored upper-case


def _plain_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _iso_text(value: Any) -> Any:
    """Timestamps are ISO 8601 text only: no numbers (0 is not a moment someone meant), no dates alone."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_TIME.match(value):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z")
    return value


def _utc(value: datetime) -> datetime:
    """Timestamps without an offset are UTC; all are kept in UTC from 1970 to 9999."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    if value < _EARLIEST:
        raise ValueError("must be on or after 1970-01-01T00:00:00Z")
    return value


SubjectId = Annotated[str, StringConstraints(pattern=SUBJECT_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Territory = Annotated[str, StringConstraints(pattern=TERRITORY_PATTERN, to_upper=True)]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_plain_text)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_plain_text)]
Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
DailyCap = Annotated[int, Field(ge=1, le=2**31 - 1)]  # form fields are text: "3" is 3
StrictDailyCap = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]  # JSON: a number, not true or "3"
JobId = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
Purpose = Literal[PURPOSES]  # type: ignore[valid-type]
SubjectPath = Annotated[
    str, Path(pattern=SUBJECT_ID_PATTERN, description="The subject's id.", examples=["ada-01"])
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectIn(_In):
    subject_id: SubjectId = Field(description="1–64 ASCII letters, digits, '-' or '_'.", examples=["ada-01"])
    display_name: DisplayName = Field(examples=["Ada L."])


class AmendIn(_In):
    """What changes; anything left out keeps its current value (scope fields one by one)."""

    platforms: list[Name] | None = Field(None, min_length=1, max_length=MAX_LIST)
    allowed_tags: list[Name] | None = Field(None, max_length=MAX_LIST, description="Empty: any template tag.")
    territories: list[Territory] | None = Field(None, max_length=MAX_LIST, description="Empty: anywhere.")
    commercial_use: StrictBool | None = None
    valid_until: Timestamp | None = None
    daily_cap: StrictDailyCap | None = None
    reason: Reason | None = None


class RevokeIn(_In):
    reason: Reason


class CheckIn(_In):
    subject: SubjectId
    purpose: Purpose
    platform: Name
    template_tags: list[Name] = Field(default_factory=list, max_length=MAX_LIST)
    territory: Territory | None = None
    commercial: StrictBool
    at: Timestamp | None = Field(None, description="When the use happens; default now (UTC if no offset).")
    image_base64: str | None = Field(
        None,
        description="The source image (PNG or JPEG), base64: checked against "
        "the enrolled images and, by embedding, the identity.",
    )
    consume: StrictBool = Field(
        False, description="Count an allowed use toward today's daily cap (requires `job_id`)."
    )
    job_id: JobId | None = Field(
        None,
        description="The job asking (an opaque identifier); required when `consume` is true. A consuming "
        "check counts one use per job: a redelivered job asking again is not counted again, and any "
        "check of a job whose use is counted is not turned away by the daily cap.",
        examples=["job-2f9c1e"],
    )


# -- output types ----------------------------------------------------------------------------------


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    error: str = Field(
        description="The error's class: NotFound, Conflict, Refused, TooLarge, ValidationError, ..."
    )
    detail: str
    errors: list[FieldError] | None = Field(None, description="Per-field problems (validation errors only).")


class SubjectOut(BaseModel):
    subject_id: str
    display_name: str


class SubjectSummary(BaseModel):
    subject_id: str
    display_name: str
    erased_at: datetime | None
    version: int | None = Field(description="Latest consent version; null if none yet.")
    status: str | None
    valid_until: datetime | None
    images: int


class ScopeOut(BaseModel):
    platforms: list[str]
    allowed_tags: list[str]
    territories: list[str]
    commercial_use: bool


class VersionOut(BaseModel):
    version: int
    status: str
    scope: ScopeOut
    valid_from: datetime
    valid_until: datetime | None
    daily_cap: int | None
    reason: str | None
    actor: str
    created_at: datetime
    lease_key_id: str


class ImageOut(BaseModel):
    sha256: str
    phash: str
    embedder: str
    created_at: datetime


class PostOut(BaseModel):
    platform: str
    post_id: str
    job_id: str
    published_at: datetime


class SubjectDetail(BaseModel):
    subject_id: str
    display_name: str
    created_at: datetime
    erased_at: datetime | None
    versions: list[VersionOut]
    images: list[ImageOut]
    posts: list[PostOut]


class EnrolmentOut(BaseModel):
    subject_id: str
    sha256: str
    phash: str
    embedder: str
    qc: dict[str, Any]


class ConsentOut(BaseModel):
    subject_id: str
    version: int
    status: str
    key_id: str
    valid_from: datetime
    valid_until: datetime | None
    daily_cap: int | None
    scope: ScopeOut

    @classmethod
    def of(cls, terms: LeaseTerms) -> "ConsentOut":
        return cls(
            subject_id=terms.subject,
            version=terms.consent_version,
            status=terms.status,
            key_id=terms.key_id,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            daily_cap=terms.daily_cap,
            scope=ScopeOut(**terms.scope.canonical()),
        )


class RevokeOut(BaseModel):
    subject_id: str
    version: int
    status: str
    takedown: list[PostOut] = Field(description="Posts that used the face: to take down.")


class EraseOut(BaseModel):
    subject_id: str
    unreadable_images: list[str] = Field(description="Stored images that can no longer be decrypted.")
    unreadable_embeddings: int


class CheckOut(BaseModel):
    allowed: bool
    reason: str = Field(description="'ok' or a denial reason.")
    detail: str
    consent_version: int | None


class LeaseOut(BaseModel):
    subject_id: str
    version: int
    status: str
    key_id: str
    payload: str = Field(description="The signed canonical bytes, base64.")
    signature: str = Field(description="Ed25519 signature of payload, base64.")


class CheckpointOut(BaseModel):
    log_id: str = Field(description="Which audit log (the registry's schema); the topic's key.")
    entry_count: int = Field(description="Entries the log held when signed.")
    head_seq: int = Field(description="Sequence number of the newest entry covered.")
    head_hash: str = Field(description="Entry hash (SHA-256 hex) of the newest entry covered.")
    issued_at: datetime
    key_id: str = Field(description="The signing key (see /keys).")
    reason: str = Field(description="interval, entries or demand.")
    payload: str = Field(description="The signed canonical bytes, base64.")
    signature: str = Field(description="Ed25519 signature of payload, base64.")

    @classmethod
    def of(cls, cp: audit.Checkpoint) -> "CheckpointOut":
        return cls(
            **cp.summary(),
            payload=base64.b64encode(cp.payload).decode(),
            signature=base64.b64encode(cp.signature).decode(),
        )


class CheckpointSummary(BaseModel):
    log_id: str
    entry_count: int
    head_seq: int
    head_hash: str
    issued_at: datetime
    key_id: str
    reason: str


class AuditOut(BaseModel):
    ok: bool
    entries: int
    first_broken: int | None = Field(description="Sequence number of the first entry found wrong or missing.")
    problem: str
    checkpoint: CheckpointSummary | None = Field(
        None,
        description="The strongest genuine checkpoint found (highest signed entry count, then latest "
        "signed time) among those on the topic and the registry's record of those it issued; the chain "
        "was checked against it and every other genuine one.",
    )
    note: str = ""


_DESCRIBE = {
    400: "The body could not be parsed (JSON that is not UTF-8, malformed multipart).",
    401: "No bearer token, or an unknown or revoked one.",
    403: "A reader token on a write route.",
    404: "No such subject.",
    409: "The request conflicts with the subject's current state.",
    410: "The subject's biometric data was erased.",
    413: "The body or an upload is over its limit.",
    422: "Invalid request, or input the registry refuses (failed quality check, wrong person, ...).",
    503: "The registry has no signing key yet, or the checkpoint topic cannot be read.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Every route may answer 401 (the gate), 413 (any body is limited) and 422 (bad input)."""
    return {
        code: {"model": ErrorBody, "description": _DESCRIBE[code]}
        for code in sorted({401, 413, 422, *codes})
    }


# -- authentication --------------------------------------------------------------------------------

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A registry API token: admin (write and read) or reader (read and check).",
)


def _bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class _BodyTooLarge(Exception):
    pass


class _Gate:
    """In front of every route: resolves the bearer token before anything reads the body (an
    anonymous client never gets an upload parsed), then limits the body as it streams in (a
    declared Content-Length over the limit is refused before reading). The route's dependency only
    checks the role."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        pool: asyncpg.Pool,
        schema: str,
        public: frozenset[str],
        body_limit: Callable[[str, str], int],
        allowed: Callable[[str], frozenset[str]],
    ) -> None:
        self.app, self.pool, self.schema, self.public, self.body_limit = app, pool, schema, public, body_limit
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self.allowed(path)
        if methods and scope["method"] not in methods:  # OPTIONS too: nothing but the documented methods
            allow = ", ".join(m for m in _METHODS if m in methods)
            await _error(
                405, "MethodNotAllowed", f"{scope['method']} is not allowed on {path[:200]}; allowed: {allow}",
                headers={"Allow": allow},
            )(scope, receive, send)
            return
        if path in self.public:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer_token(headers.get("authorization"))
        try:
            principal = await tokens.authenticate(self.pool, self.schema, token) if token else None
        except Exception as exc:  # the token table is in the database: its outage is a 503, not a 500
            dependency = outage_of(exc)
            if dependency is None:
                raise
            await _unavailable(dependency)(scope, receive, send)
            return
        if principal is None:
            detail = "a bearer token is required" if token is None else "unknown or revoked token"
            await _error(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        scope[_PRINCIPAL] = principal

        limit = self.body_limit(scope["method"], path)
        too_large = _error(
            413, "TooLarge", f"the request body is over the {limit}-byte limit of {scope['method']} {path}"
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app made of the cut-off body: the answer is 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await too_large(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> tokens.Principal:
    principal = request.scope.get(_PRINCIPAL)
    if principal is None:  # only if the middleware is missing
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return principal  # type: ignore[no-any-return]


def _admin(principal: Annotated[tokens.Principal, Depends(_principal)]) -> tokens.Principal:
    if not principal.can_write:
        raise HTTPException(
            403, f"token {principal.name!r} has the {principal.role} role; this route needs an admin token"
        )
    return principal


Reader = Annotated[tokens.Principal, Depends(_principal)]
Admin = Annotated[tokens.Principal, Depends(_admin)]


# -- errors ----------------------------------------------------------------------------------------


def _error(
    status: int,
    error: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(loc: tuple[str | int, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": None}])


def _unavailable(dependency: str) -> JSONResponse:
    return _error(503, "Unavailable", f"{dependency} is unavailable; retry shortly", headers={"Retry-After": "5"})


def _install_error_handlers(app: FastAPI) -> None:
    async def registry_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RegistryError)
        return _error(exc.status, type(exc).__name__, str(exc))

    async def erased(_: Request, exc: Exception) -> JSONResponse:
        return _error(410, type(exc).__name__, str(exc))

    async def no_signing_key(_: Request, exc: Exception) -> JSONResponse:
        return _error(503, type(exc).__name__, str(exc))

    async def unique_violation(_: Request, exc: Exception) -> JSONResponse:
        # two requests raced for the same row; the loser's transaction rolled back
        return _error(
            409, "Conflict", "a concurrent request wrote the same record first; read it and retry if needed"
        )

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = []
        for e in exc.errors():
            msg = str(e.get("msg", "invalid"))
            ctx = e.get("ctx") or {}
            if e.get("type") == "json_invalid" and isinstance(ctx.get("error"), str):
                msg = f"{msg}: {ctx['error']}"
            loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]
            errors.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
        detail = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors[:5])
        if len(errors) > 5:
            detail += f"; and {len(errors) - 5} more"
        return _error(422, "ValidationError", detail or "invalid request", errors=errors)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = str(exc.detail)
        try:
            name = (
                "TooLarge" if exc.status_code == 413 else HTTPStatus(exc.status_code).phrase.replace(" ", "")
            )
        except ValueError:
            name = "HTTPError"
        return _error(exc.status_code, name, detail, headers=dict(exc.headers or {}))

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        # the registry's database (or store) is away: a 503 the clients treat as an outage, not a "no"
        dependency = outage_of(exc)
        if dependency is None:
            return _error(500, "InternalError", f"{type(exc).__name__}: {exc}"[:500])
        return _unavailable(dependency)

    for outage in (DependencyUnavailable, OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError,
                   asyncpg.InterfaceError):
        app.add_exception_handler(outage, unavailable)
    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(ErasedError, erased)
    app.add_exception_handler(keys.NoSigningKey, no_signing_key)
    app.add_exception_handler(asyncpg.UniqueViolationError, unique_violation)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http_error)


# -- uploads ---------------------------------------------------------------------------------------


def _label(field: str, upload: UploadFile) -> str:
    name = (upload.filename or "")[:100]
    return f"the {field} upload {name!r}" if name else f"the {field} upload"


async def _read_upload(upload: UploadFile, field: str, limit: int) -> bytes:
    """The upload's bytes, refused as soon as it passes ``limit`` (nothing decodes it before)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{_label(field, upload)} is over the {limit}-byte upload limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _require_image(data: bytes, what: str, max_pixels: int) -> None:
    """PNG or JPEG by signature, and a canvas of at most ``max_pixels`` (read from the header,
    before anything is decoded)."""
    if not data:
        raise Refused(f"{what} is empty")
    if not (data.startswith(_PNG) or data.startswith(_JPEG)):
        raise Refused(f"{what} is not a PNG or JPEG image (it starts with {data[:8].hex() or 'nothing'})")
    size = declared_size(data)
    if size is None:
        return  # an unreadable header: the registry's decoder refuses it with its own words
    width, height = size
    if width * height > max_pixels:
        raise too_many_pixels(what, width, height, max_pixels)


def _base64_length(limit: int) -> int:
    return 4 * math.ceil(limit / 3)


def _decode_base64(text: str, limit: int) -> bytes:
    if len(text) > _base64_length(limit):
        raise TooLarge(f"image_base64 is over the {limit}-byte upload limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(("body", "image_base64"), "is not valid base64") from None
    if len(data) > limit:
        raise TooLarge(f"image_base64 is over the {limit}-byte upload limit")
    return data


def _form_list(values: list[str] | None, field: str, *, pattern: str, upper: bool = False) -> tuple[str, ...]:
    """A repeatable form field whose values may also be comma lists."""
    check = re.compile(pattern)
    items: list[str] = []
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            item = item.upper() if upper else item
            if not check.fullmatch(item):
                raise _invalid(("body", field), f"{item[:80]!r} does not match {pattern}")
            if item not in items:
                items.append(item)
    if len(items) > MAX_LIST:
        raise _invalid(("body", field), f"at most {MAX_LIST} values")
    return tuple(items)


# -- the app ---------------------------------------------------------------------------------------


def build_api(registry: Registry, pool: asyncpg.Pool, schema: str) -> FastAPI:
    limit = registry.config.max_upload_bytes
    max_pixels = registry.config.max_face_pixels
    app = FastAPI(
        title="Reelfab consent registry",
        version=__version__,
        description="Subjects, enrolment, consent versions with signed leases, revocation, erasure, "
        "consent checks and the audit chain. Bearer tokens: admin writes, reader reads and checks.",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    public = frozenset(p for p in (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url) if p)
    upload_body, check_body = limit + FORM_ALLOWANCE, _base64_length(limit) + FORM_ALLOWANCE

    def body_limit(method: str, path: str) -> int:
        if method == "POST" and _UPLOAD_ROUTE.match(path):
            return upload_body
        return check_body if (method, path) == ("POST", "/check") else JSON_BODY_LIMIT

    def allowed(path: str) -> frozenset[str]:
        """The methods of every route matching ``path`` (empty: no route, a 404 follows)."""
        found: set[str] = set()
        for route in app.routes:
            regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
            if regex is not None and methods and regex.fullmatch(path):
                found |= set(methods)
        if "GET" in found:
            found.add("HEAD")
        return frozenset(found)

    app.add_middleware(
        _Gate, pool=pool, schema=schema, public=public, body_limit=body_limit, allowed=allowed
    )
    _install_error_handlers(app)

    @app.post(
        "/subjects",
        status_code=201,
        response_model=SubjectOut,
        responses=_errors(400, 403, 409, 413, 422),
        tags=["subjects"],
        summary="Create a subject",
    )
    async def create_subject(body: SubjectIn, who: Admin) -> SubjectOut:
        return SubjectOut(**await registry.create_subject(body.subject_id, body.display_name, actor=who.name))

    @app.get(
        "/subjects",
        response_model=list[SubjectSummary],
        responses=_errors(),
        tags=["subjects"],
        summary="List subjects with their latest consent",
    )
    async def list_subjects(_: Reader) -> list[SubjectSummary]:
        return [SubjectSummary(**s) for s in await registry.list_subjects()]

    @app.get(
        "/subjects/{subject_id}",
        response_model=SubjectDetail,
        responses=_errors(404, 422),
        tags=["subjects"],
        summary="A subject: consent versions, enrolled images, posts",
    )
    async def get_subject(subject_id: SubjectPath, _: Reader) -> SubjectDetail:
        return SubjectDetail(**await registry.get_subject(subject_id))

    @app.post(
        "/subjects/{subject_id}/images",
        status_code=201,
        response_model=EnrolmentOut,
        responses=_errors(400, 403, 404, 409, 410, 413, 422, 503),
        tags=["subjects"],
        summary="Enrol a photo (PNG or JPEG) of the subject",
    )
    async def enrol(
        subject_id: SubjectPath, image: Annotated[UploadFile, File(description="PNG or JPEG.")], who: Admin
    ) -> EnrolmentOut:
        data = await _read_upload(image, "image", limit)
        _require_image(data, _label("image", image), max_pixels)
        return EnrolmentOut(**await registry.enrol(subject_id, data, actor=who.name))

    @app.post(
        "/subjects/{subject_id}/consents",
        status_code=201,
        response_model=ConsentOut,
        responses=_errors(400, 403, 404, 409, 410, 413, 422, 503),
        tags=["consent"],
        summary="Grant consent (a new version) from a signed document",
    )
    async def grant(
        subject_id: SubjectPath,
        who: Admin,
        document: Annotated[UploadFile, File(description="The signed consent document (any format).")],
        platforms: Annotated[list[str], Form(description="Repeat the field or give a comma list.")],
        allowed_tags: Annotated[list[str] | None, Form(description="Empty: any template tag.")] = None,
        territories: Annotated[
            list[str] | None, Form(description="ISO 3166-1 alpha-2; empty: anywhere.")
        ] = None,
        commercial_use: Annotated[bool, Form()] = False,
        valid_from: Annotated[Timestamp | None, Form(description="Default now.")] = None,
        valid_until: Annotated[Timestamp | None, Form(description="Default open-ended.")] = None,
        daily_cap: Annotated[DailyCap | None, Form(description="Uses per day; default no cap.")] = None,
    ) -> ConsentOut:
        scope = ConsentScope(
            platforms=_form_list(platforms, "platforms", pattern=NAME_PATTERN),
            allowed_tags=_form_list(allowed_tags, "allowed_tags", pattern=NAME_PATTERN),
            territories=_form_list(territories, "territories", pattern=TERRITORY_PATTERN, upper=True),
            commercial_use=commercial_use,
        )
        if not scope.platforms:
            raise _invalid(("body", "platforms"), "name at least one platform")
        data = await _read_upload(document, "document", limit)
        terms = await registry.grant(
            subject_id,
            document=data,
            scope=scope,
            valid_from=valid_from,
            valid_until=valid_until,
            daily_cap=daily_cap,
            actor=who.name,
        )
        return ConsentOut.of(terms)

    @app.patch(
        "/subjects/{subject_id}/consents",
        response_model=ConsentOut,
        responses=_errors(400, 403, 404, 409, 410, 413, 422, 503),
        tags=["consent"],
        summary="Amend the current consent (a new version)",
    )
    async def amend(subject_id: SubjectPath, body: AmendIn, who: Admin) -> ConsentOut:
        changes: dict[str, Any] = {
            k: tuple(dict.fromkeys(v)) if isinstance(v, list) else v
            for k in ("platforms", "allowed_tags", "territories", "commercial_use")
            if (v := getattr(body, k)) is not None
        }
        if not changes and body.valid_until is None and body.daily_cap is None:
            raise _invalid(
                ("body",),
                "nothing to amend: give platforms, allowed_tags, territories, "
                "commercial_use, valid_until or daily_cap",
            )
        terms = await registry.amend(  # scope fields left out keep their current values
            subject_id,
            actor=who.name,
            scope_changes=changes,
            valid_until=body.valid_until,
            daily_cap=body.daily_cap,
            reason=body.reason,
        )
        return ConsentOut.of(terms)

    @app.post(
        "/subjects/{subject_id}/revoke",
        response_model=RevokeOut,
        responses=_errors(400, 403, 404, 409, 410, 413, 422, 503),
        tags=["consent"],
        summary="Revoke consent; lists the posts to take down",
    )
    async def revoke(subject_id: SubjectPath, body: RevokeIn, who: Admin) -> RevokeOut:
        terms, posts = await registry.revoke(subject_id, actor=who.name, reason=body.reason)
        return RevokeOut(
            subject_id=subject_id,
            version=terms.consent_version,
            status=terms.status,
            takedown=[PostOut(**p) for p in posts],
        )

    @app.post(
        "/subjects/{subject_id}/erase",
        response_model=EraseOut,
        responses=_errors(403, 404, 409, 410, 422, 503),
        tags=["consent"],
        summary="Erase the subject's biometric data (after revocation)",
    )
    async def erase(subject_id: SubjectPath, who: Admin) -> EraseOut:
        return EraseOut(**await registry.erase(subject_id, actor=who.name))

    @app.get(
        "/subjects/{subject_id}/lease",
        response_model=LeaseOut,
        responses=_errors(404, 422),
        tags=["consent"],
        summary="The latest signed lease",
    )
    async def latest_lease(subject_id: SubjectPath, _: Reader) -> LeaseOut:
        lease = await registry.latest_lease(subject_id)
        if lease is None:
            raise NotFound(f"no consent record for subject {subject_id}")
        terms = lease.terms()
        return LeaseOut(
            subject_id=subject_id,
            version=terms.consent_version,
            status=terms.status,
            key_id=lease.key_id,
            payload=base64.b64encode(lease.payload).decode(),
            signature=base64.b64encode(lease.signature).decode(),
        )

    @app.post(
        "/check",
        response_model=CheckOut,
        responses=_errors(400, 413, 422),
        tags=["check"],
        summary="May this face be used for this purpose, here, now?",
    )
    async def check(body: CheckIn, who: Reader) -> CheckOut:
        if body.consume and body.job_id is None:
            raise _invalid(
                ("body", "job_id"),
                "a consuming check must name its job_id: without it every redelivery would count another use",
            )
        now = registry.clock()
        at = body.at or now
        if body.consume and abs((at - now).total_seconds()) > CONSUME_SKEW_S:
            raise _invalid(
                ("body", "at"), "a consuming check counts today's uses: leave `at` out (it must be now)"
            )
        image = _decode_base64(body.image_base64, limit) if body.image_base64 is not None else None
        if image is not None:
            _require_image(image, "image_base64", max_pixels)
        request = ConsentRequest(
            subject=body.subject,
            purpose=body.purpose,
            platform=body.platform,
            at=at,
            template_tags=tuple(body.template_tags),
            territory=body.territory,
            commercial=body.commercial,
        )
        decision = await registry.check(
            request, image_bytes=image, consume=body.consume, actor=who.name, job_id=body.job_id
        )
        return CheckOut(
            allowed=decision.allowed,
            reason=decision.reason,
            detail=decision.detail,
            consent_version=decision.consent_version,
        )

    @app.get(
        "/keys",
        response_model=dict[str, str],
        responses=_errors(),
        tags=["keys"],
        summary="Public keys by key id (REELFAB_CONSENT_PUBLIC_KEYS)",
    )
    async def public_keys(_: Reader) -> dict[str, str]:
        return {
            key_id: public_key_text(key) for key_id, key in (await keys.public_keys(pool, schema)).items()
        }

    @app.get(
        "/audit/verify",
        response_model=AuditOut,
        responses=_errors(),
        tags=["audit"],
        summary="Recompute the audit chain",
    )
    async def verify_audit(_: Reader) -> AuditOut:
        return AuditOut(**asdict(await registry.verify_audit()))

    @app.get(
        "/audit/checkpoint",
        response_model=CheckpointOut,
        responses=_errors(404, 503),
        tags=["audit"],
        summary="The newest signed audit checkpoint, as published on the checkpoint topic",
    )
    async def latest_checkpoint(_: Reader) -> CheckpointOut:
        cp = await registry.latest_checkpoint()
        if cp is None:
            raise NotFound(f"no audit checkpoint of {registry.log_id} has been published yet")
        return CheckpointOut.of(cp)

    @app.post(
        "/audit/checkpoint",
        status_code=201,
        response_model=CheckpointOut,
        responses=_errors(403, 404, 409, 503),
        tags=["audit"],
        summary="Sign a checkpoint of the audit chain now (published through the outbox)",
    )
    async def issue_checkpoint(_: Admin) -> CheckpointOut:
        cp = await registry.issue_checkpoint("demand")
        if cp is None:
            raise NotFound("the audit chain is empty: nothing to sign")
        return CheckpointOut.of(cp)

    return app
