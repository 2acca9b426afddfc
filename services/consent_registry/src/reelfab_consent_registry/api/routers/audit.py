"""The audit chain: verify it, read the newest published checkpoint, sign one now."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from dataclasses import asdict

from fastapi import APIRouter

from ...errors import NotFound
from ..deps import UseCases
from ..errors import documented
from ..gate import Admin, Reader
from ..models import AuditOut, CheckpointOut

router = APIRouter(tags=["audit"])


@router.get(
    "/audit/verify",
    response_model=AuditOut,
    responses=documented(),
    summary="Recompute the audit chain",
)
async def verify_audit(_: Reader, registry: UseCases) -> AuditOut:
    return AuditOut(**asdict(await registry.trail.verify_audit()))


@router.get(
    "/audit/checkpoint",
    response_model=CheckpointOut,
    responses=documented(404, 503),
    summary="The newest signed audit checkpoint, as published on the checkpoint topic",
)
async def latest_checkpoint(_: Reader, registry: UseCases) -> CheckpointOut:
    cp = await registry.trail.latest_checkpoint()
    if cp is None:
        raise NotFound(f"no audit checkpoint of {registry.log_id} has been published yet")
    return CheckpointOut.of(cp)


@router.post(
    "/audit/checkpoint",
    status_code=201,
    response_model=CheckpointOut,
    responses=documented(403, 404, 409, 503),
    summary="Sign a checkpoint of the audit chain now (published through the outbox)",
)
async def issue_checkpoint(_: Admin, registry: UseCases) -> CheckpointOut:
    cp = await registry.trail.issue_checkpoint("demand")
    if cp is None:
        raise NotFound("the audit chain is empty: nothing to sign")
    return CheckpointOut.of(cp)
