"""How the API answers when it does not: every error body is ``{"error": <class>, "detail": <message>}``
(validation errors add ``errors``; a refused image fetch adds its ``reason`` code); registry refusals
keep their status (``errors.RegistryError``), erased data is 410, an outage of the registry's database
or store 503 with Retry-After."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from reelfab.bus.outage import outage_of
from reelfab.errors import DependencyUnavailable
from reelfab.logging import get_logger

from .. import keys
from ..crypto import ErasedError
from ..errors import RegistryError
from .models import ErrorBody

log = get_logger("reelfab.consent_registry")

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


def documented(*codes: int, describe: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """Every route may answer 401 (the gate), 413 (any body is limited) and 422 (bad input);
    ``describe`` says what a status means on this route where that differs from the usual."""
    said = {**_DESCRIBE, **(describe or {})}
    return {code: {"model": ErrorBody, "description": said[code]} for code in sorted({401, 413, 422, *codes})}


def error_response(
    status: int,
    error: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    reason: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    if reason is not None:
        body["reason"] = reason
    return JSONResponse(body, status_code=status, headers=headers)


def invalid(loc: tuple[str | int, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": None}])


def unavailable(dependency: str) -> JSONResponse:
    return error_response(503, "Unavailable", f"{dependency} is unavailable; retry shortly", headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    async def registry_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RegistryError)
        return error_response(exc.status, type(exc).__name__, str(exc))

    async def erased(_: Request, exc: Exception) -> JSONResponse:
        return error_response(410, type(exc).__name__, str(exc))

    async def no_signing_key(_: Request, exc: Exception) -> JSONResponse:
        return error_response(503, type(exc).__name__, str(exc))

    async def unique_violation(_: Request, exc: Exception) -> JSONResponse:
        # two requests raced for the same row; the loser's transaction rolled back
        return error_response(
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
        return error_response(422, "ValidationError", detail or "invalid request", errors=errors)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = str(exc.detail)
        try:
            name = (
                "TooLarge" if exc.status_code == 413 else HTTPStatus(exc.status_code).phrase.replace(" ", "")
            )
        except ValueError:
            name = "HTTPError"
        return error_response(exc.status_code, name, detail, headers=dict(exc.headers or {}))

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        # the registry's database (or store) is away: a 503 the clients treat as an outage, not a "no"
        dependency = outage_of(exc)
        if dependency is None:  # its message may name the store's paths: the log's, not the caller's
            log.error("an unexpected error answered 500", method=request.method, path=request.url.path,
                      error=f"{type(exc).__name__}: {exc}"[:1000])
            return error_response(500, "InternalError",
                                  f"an unexpected {type(exc).__name__}; the registry's log has the detail")
        return unavailable(dependency)

    for cls in (DependencyUnavailable, OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError,
                   asyncpg.InterfaceError):
        app.add_exception_handler(cls, outage)
    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(ErasedError, erased)
    app.add_exception_handler(keys.NoSigningKey, no_signing_key)
    app.add_exception_handler(asyncpg.UniqueViolationError, unique_violation)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http_error)
