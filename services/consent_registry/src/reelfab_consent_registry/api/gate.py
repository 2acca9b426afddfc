"""In front of every route: the bearer-token gate and the per-route body limits (``Gate``), and the
dependencies routes declare who may call them with (``Reader``, ``Admin``)."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelfab.bus.outage import outage_of

from .. import tokens
from .errors import error_response, unavailable

JSON_BODY_LIMIT = 1024 * 1024  # JSON requests (not /check, which may carry an image)
FORM_ALLOWANCE = 64 * 1024  # multipart framing and form fields beside an upload
_PRINCIPAL = "reelfab.consent.principal"
UPLOAD_ROUTE = re.compile(r"^/subjects/[^/]+/(images|consents)$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
Authenticate = Callable[[str], Awaitable[tokens.Principal | None]]

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


class Gate:
    """In front of every route: resolves the bearer token before anything reads the body (an
    anonymous client never gets an upload parsed), then limits the body as it streams in (a
    declared Content-Length over the limit is refused before reading). The route's dependency only
    checks the role."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        public: frozenset[str],
        body_limit: Callable[[str, str], int],
        allowed: Callable[[str], frozenset[str]],
    ) -> None:
        self.app, self.authenticate, self.public, self.body_limit = app, authenticate, public, body_limit
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self.allowed(path)
        if methods and scope["method"] not in methods:  # OPTIONS too: nothing but the documented methods
            allow = ", ".join(m for m in _METHODS if m in methods)
            await error_response(
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
            principal = await self.authenticate(token) if token else None
        except Exception as exc:  # the token table is in the database: its outage is a 503, not a 500
            dependency = outage_of(exc)
            if dependency is None:
                raise
            await unavailable(dependency)(scope, receive, send)
            return
        if principal is None:
            detail = "a bearer token is required" if token is None else "unknown or revoked token"
            await error_response(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        scope[_PRINCIPAL] = principal

        limit = self.body_limit(scope["method"], path)
        too_large = error_response(
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


def route_path(scope: Scope) -> str:
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
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
