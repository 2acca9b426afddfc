"""Consent checks: may this face be used for this purpose, here, now (counting a use when asked)?"""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from fastapi import APIRouter

from reelfab.consent.decision import ConsentRequest

from ..deps import UseCases
from ..errors import documented, invalid
from ..gate import Reader
from ..models import CheckIn, CheckOut
from ..uploads import decode_base64, require_image

CONSUME_SKEW_S = 300  # a consuming check counts today's uses: its `at` must be now

router = APIRouter(tags=["check"])


@router.post(
    "/check",
    response_model=CheckOut,
    responses=documented(400, 413, 422),
    summary="May this face be used for this purpose, here, now?",
)
async def check(body: CheckIn, who: Reader, registry: UseCases) -> CheckOut:
    if body.consume and body.job_id is None:
        raise invalid(
            ("body", "job_id"),
            "a consuming check must name its job_id: without it every redelivery would count another use",
        )
    now = registry.clock()
    at = body.at or now
    if body.consume and abs((at - now).total_seconds()) > CONSUME_SKEW_S:
        raise invalid(("body", "at"), "a consuming check counts today's uses: leave `at` out (it must be now)")
    limit = registry.config.max_upload_bytes
    image = decode_base64(body.image_base64, limit) if body.image_base64 is not None else None
    if image is not None:
        require_image(image, "image_base64", registry.config.max_face_pixels)
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
