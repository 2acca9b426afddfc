"""Subjects and enrolment: create, list, read, enrol a photo."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from ..deps import UseCases
from ..errors import documented
from ..gate import Admin, Reader
from ..models import EnrolmentOut, SubjectDetail, SubjectIn, SubjectOut, SubjectPath, SubjectSummary
from ..uploads import label, read_upload, require_image

router = APIRouter(tags=["subjects"])


@router.post(
    "/subjects",
    status_code=201,
    response_model=SubjectOut,
    responses=documented(400, 403, 409, 413, 422),
    summary="Create a subject",
)
async def create_subject(body: SubjectIn, who: Admin, registry: UseCases) -> SubjectOut:
    return SubjectOut(**await registry.create_subject(body.subject_id, body.display_name, actor=who.name))


@router.get(
    "/subjects",
    response_model=list[SubjectSummary],
    responses=documented(),
    summary="List subjects with their latest consent",
)
async def list_subjects(_: Reader, registry: UseCases) -> list[SubjectSummary]:
    return [SubjectSummary(**s) for s in await registry.list_subjects()]


@router.get(
    "/subjects/{subject_id}",
    response_model=SubjectDetail,
    responses=documented(404, 422),
    summary="A subject: consent versions, enrolled images, posts",
)
async def get_subject(subject_id: SubjectPath, _: Reader, registry: UseCases) -> SubjectDetail:
    return SubjectDetail(**await registry.get_subject(subject_id))


@router.post(
    "/subjects/{subject_id}/images",
    status_code=201,
    response_model=EnrolmentOut,
    responses=documented(400, 403, 404, 409, 410, 413, 422, 503),
    summary="Enrol a photo (PNG or JPEG) of the subject",
)
async def enrol(
    subject_id: SubjectPath,
    image: Annotated[UploadFile, File(description="PNG or JPEG.")],
    who: Admin,
    registry: UseCases,
) -> EnrolmentOut:
    data = await read_upload(image, "image", registry.config.max_upload_bytes)
    require_image(data, label("image", image), registry.config.max_face_pixels)
    return EnrolmentOut(**await registry.enrol(subject_id, data, actor=who.name))
