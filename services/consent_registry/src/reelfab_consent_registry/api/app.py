"""The registry's HTTP API: each route is one use case of ``Registry`` (one transaction), behind
bearer tokens (``tokens``): admin writes and reads, reader reads and asks for checks.

Bad input is a 4xx, never a 5xx: request validation and refusals are 422, an unknown subject 404,
a state conflict 409, erased data 410, an oversized upload 413; an enrolled image is refused 403
while the subject's consent is not active, and 409 if its stored copy fails the integrity check.
Every error body is ``{"error": <class>, "detail": <message>}`` (validation errors add ``errors``,
a refused image fetch its ``reason``). Requests are
authenticated before their body is read, and bodies are limited per route while they stream in."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

import asyncpg
from fastapi import FastAPI

from reelfab.version import __version__

from .. import tokens
from ..use_cases import Registry
from .errors import install_error_handlers
from .gate import FORM_ALLOWANCE, JSON_BODY_LIMIT, UPLOAD_ROUTE, Gate
from .routers import ROUTERS
from .uploads import base64_length


def build_api(registry: Registry, pool: asyncpg.Pool, schema: str) -> FastAPI:
    """The app for ``registry``; API tokens are looked up in ``schema`` on ``pool``."""
    app = FastAPI(
        title="Reelfab consent registry",
        version=__version__,
        description="Subjects, enrolment, consent versions with signed leases, revocation, erasure, "
        "consent checks, enrolled images by reference (while consent is active) and the audit chain. "
        "Bearer tokens: admin writes, reader reads and checks.",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.registry = registry
    public = frozenset(p for p in (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url) if p)
    limit = registry.config.max_upload_bytes
    upload_body, check_body = limit + FORM_ALLOWANCE, base64_length(limit) + FORM_ALLOWANCE

    def body_limit(method: str, path: str) -> int:
        if method == "POST" and UPLOAD_ROUTE.match(path):
            return upload_body
        return check_body if (method, path) == ("POST", "/check") else JSON_BODY_LIMIT

    def allowed(path: str) -> frozenset[str]:
        """The methods of every route matching ``path`` (empty: no route, a 404 follows). The routers'
        routes are read from the routers themselves: FastAPI keeps an included router as one entry."""
        found: set[str] = set()
        for route in [*app.routes, *(r for router in ROUTERS for r in router.routes)]:
            regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
            if regex is not None and methods and regex.fullmatch(path):
                found |= set(methods)
        if "GET" in found:
            found.add("HEAD")
        return frozenset(found)

    async def authenticate(token: str) -> tokens.Principal | None:
        return await tokens.authenticate(pool, schema, token)

    app.add_middleware(Gate, authenticate=authenticate, public=public, body_limit=body_limit, allowed=allowed)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
