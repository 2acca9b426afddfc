"""The registry's public keys, as other services load them (REELFAB_CONSENT_PUBLIC_KEYS)."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from fastapi import APIRouter

from reelfab.consent.lease import public_key_text

from ..deps import UseCases
from ..errors import documented
from ..gate import Reader

router = APIRouter(tags=["keys"])


@router.get(
    "/keys",
    response_model=dict[str, str],
    responses=documented(),
    summary="Public keys by key id (REELFAB_CONSENT_PUBLIC_KEYS)",
)
async def public_keys(_: Reader, registry: UseCases) -> dict[str, str]:
    return {key_id: public_key_text(key) for key_id, key in (await registry.public_keys()).items()}
