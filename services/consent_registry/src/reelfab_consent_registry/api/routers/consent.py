"""Consent versions: grant (from a signed document), amend, revoke (with the takedown list), erase,
and the latest signed lease."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

import base64
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from reelfab.consent.lease import Scope as ConsentScope

from ...errors import NotFound
from ..deps import UseCases
from ..errors import documented, invalid
from ..gate import Admin, Reader
from ..models import (
    NAME_PATTERN,
    TERRITORY_PATTERN,
    AmendIn,
    ConsentOut,
    DailyCap,
    EraseOut,
    LeaseOut,
    PostOut,
    RevokeIn,
    RevokeOut,
    SubjectPath,
    Timestamp,
)
from ..uploads import form_list, read_upload

router = APIRouter(tags=["consent"])


@router.post(
    "/subjects/{subject_id}/consents",
    status_code=201,
    response_model=ConsentOut,
    responses=documented(400, 403, 404, 409, 410, 413, 422, 503),
    summary="Grant consent (a new version) from a signed document",
)
async def grant(
    subject_id: SubjectPath,
    who: Admin,
    document: Annotated[UploadFile, File(description="The signed consent document (any format).")],
    platforms: Annotated[list[str], Form(description="Repeat the field or give a comma list.")],
    registry: UseCases,
    allowed_tags: Annotated[list[str] | None, Form(description="Empty: any template tag.")] = None,
    territories: Annotated[list[str] | None, Form(description="ISO 3166-1 alpha-2; empty: anywhere.")] = None,
    commercial_use: Annotated[bool, Form()] = False,
    valid_from: Annotated[Timestamp | None, Form(description="Default now.")] = None,
    valid_until: Annotated[Timestamp | None, Form(description="Default open-ended.")] = None,
    daily_cap: Annotated[DailyCap | None, Form(description="Uses per day; default no cap.")] = None,
) -> ConsentOut:
    scope = ConsentScope(
        platforms=form_list(platforms, "platforms", pattern=NAME_PATTERN),
        allowed_tags=form_list(allowed_tags, "allowed_tags", pattern=NAME_PATTERN),
        territories=form_list(territories, "territories", pattern=TERRITORY_PATTERN, upper=True),
        commercial_use=commercial_use,
    )
    if not scope.platforms:
        raise invalid(("body", "platforms"), "name at least one platform")
    data = await read_upload(document, "document", registry.config.max_upload_bytes)
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


@router.patch(
    "/subjects/{subject_id}/consents",
    response_model=ConsentOut,
    responses=documented(400, 403, 404, 409, 410, 413, 422, 503),
    summary="Amend the current consent (a new version)",
)
async def amend(subject_id: SubjectPath, body: AmendIn, who: Admin, registry: UseCases) -> ConsentOut:
    changes: dict[str, Any] = {
        k: tuple(dict.fromkeys(v)) if isinstance(v, list) else v
        for k in ("platforms", "allowed_tags", "territories", "commercial_use")
        if (v := getattr(body, k)) is not None
    }
    if not changes and body.valid_until is None and body.daily_cap is None:
        raise invalid(
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


@router.post(
    "/subjects/{subject_id}/revoke",
    response_model=RevokeOut,
    responses=documented(400, 403, 404, 409, 410, 413, 422, 503),
    summary="Revoke consent; lists the posts to take down",
)
async def revoke(subject_id: SubjectPath, body: RevokeIn, who: Admin, registry: UseCases) -> RevokeOut:
    terms, posts = await registry.revoke(subject_id, actor=who.name, reason=body.reason)
    return RevokeOut(
        subject_id=subject_id,
        version=terms.consent_version,
        status=terms.status,
        takedown=[PostOut(**p) for p in posts],
    )


@router.post(
    "/subjects/{subject_id}/erase",
    response_model=EraseOut,
    responses=documented(403, 404, 409, 410, 422, 503),
    summary="Erase the subject's biometric data (after revocation)",
)
async def erase(subject_id: SubjectPath, who: Admin, registry: UseCases) -> EraseOut:
    return EraseOut(**await registry.erase(subject_id, actor=who.name))


@router.get(
    "/subjects/{subject_id}/lease",
    response_model=LeaseOut,
    responses=documented(404, 422),
    summary="The latest signed lease",
)
async def latest_lease(subject_id: SubjectPath, _: Reader, registry: UseCases) -> LeaseOut:
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
