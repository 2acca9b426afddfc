"""Enrolled images by reference: the bytes, for the service about to use them, while consent is active."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from typing import Any

from fastapi import APIRouter, Response

from ..deps import UseCases
from ..errors import documented, error_response
from ..gate import Reader
from ..image_access import fetch_enrolled_image, media_type
from ..models import Sha256Path, SubjectPath

router = APIRouter(tags=["images"])
# biometrics: never cached, never sniffed into something else
_PRIVATE = {"Cache-Control": "no-store, private", "Pragma": "no-cache", "X-Content-Type-Options": "nosniff"}
ROUTE = "/subjects/{subject_id}/images/{sha256}"
_IMAGE_TYPES: dict[str, Any] = {t: {} for t in ("image/png", "image/jpeg", "image/webp", "application/octet-stream")}


@router.get(
    ROUTE,
    response_class=Response,
    responses={
        200: {"description": "The decrypted image; its type by signature.", "content": _IMAGE_TYPES},
        **documented(
            403,
            404,
            409,
            410,
            503,
            describe={
                403: "The subject's current consent is not active (revoked, expired, not yet valid, none).",
                404: "No such subject, or no such enrolled image.",
                409: "The stored image failed its integrity check (missing, altered): it is not served.",
                503: "The registry's database or object store is unavailable.",
            },
        ),
    },
    summary="An enrolled image's bytes, while the subject's consent is active (audited)",
)
async def fetch_image(subject_id: SubjectPath, sha256: Sha256Path, who: Reader, registry: UseCases) -> Response:
    """Any valid API token (reader: the services; admin) may ask; every answer is audited with the
    token's name as the actor. The reason code of a refusal is in the body's ``reason``. HEAD answers
    as GET does (the same checks, status and headers, audited as a HEAD) without the bytes."""
    verdict, data = await fetch_enrolled_image(registry, subject_id, sha256, actor=who.name)
    if data is None:
        return error_response(verdict.status, verdict.error, verdict.detail, reason=verdict.reason, headers=_PRIVATE)
    return Response(data, media_type=media_type(data), headers=_PRIVATE)


@router.head(ROUTE, response_class=Response, include_in_schema=False)
async def image_head(subject_id: SubjectPath, sha256: Sha256Path, who: Reader, registry: UseCases) -> Response:
    """GET's answer without its body: the server sends no body for a HEAD, the length stays GET's."""
    verdict, data = await fetch_enrolled_image(registry, subject_id, sha256, actor=who.name, method="HEAD")
    if data is None:
        return error_response(verdict.status, verdict.error, verdict.detail, reason=verdict.reason, headers=_PRIVATE)
    return Response(media_type=media_type(data), headers={**_PRIVATE, "Content-Length": str(len(data))})
