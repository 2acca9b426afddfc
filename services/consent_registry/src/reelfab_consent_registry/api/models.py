"""The API's request and response bodies, and the input types their fields are checked with."""

# no ``from __future__ import annotations``: FastAPI and pydantic read these at runtime

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from reelfab.consent.decision import PURPOSES
from reelfab.consent.lease import LeaseTerms
from reelfab.identifiers import IDENTIFIER_PATTERN

from .. import audit

MAX_LIST = 50  # platforms, tags, territories per consent
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")

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
SHA256_PATTERN = r"^[0-9a-f]{64}$"
Sha256Path = Annotated[
    str,
    Path(
        pattern=SHA256_PATTERN,
        description="The enrolled image's sha256 (64 lowercase hex digits), as the subject's lease lists it.",
    ),
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
    reason: str | None = Field(
        None,
        description="Why an enrolled image was not handed over (image fetches only): a consent denial "
        "reason (revoked, expired, not_yet_valid, no_consent), erased, unknown_subject, unknown_image, or "
        "missing or tampered (the stored image failed its integrity check).",
    )


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
