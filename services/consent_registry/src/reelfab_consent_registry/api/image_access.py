"""Handing an enrolled image to the service about to use it (the swapper, by reference): only while
the subject's consent is active, every request audited (ids and hashes, never the bytes).

The bytes are read and decrypted first, outside any transaction (no object-store call runs inside
one); then one transaction locks the subject's row (as revoke and erase do), decides again and appends
the audit entry. So the bytes go out only if consent was active when that entry committed: a
revocation either committed before (403) or comes after this fetch in the audit chain."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from reelfab.consent.lease import LeaseTerms
from reelfab.errors import ObjectMissing, ObjectRefused
from reelfab.logging import get_logger

from ..crypto import DecryptError, unseal
from ..domain import ACTIVE, AuditEntry
from ..errors import RegistryError
from ..repository import Store, SubjectKey
from ..use_cases import Registry

log = get_logger("reelfab.consent_registry")
FETCHES = Counter(
    "reelfab_consent_registry_image_fetches_total",
    "Requests for an enrolled image's bytes, by outcome (ok, or why they were refused).",
    ["outcome"],
)
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


class ImageUnreadable(RegistryError):
    """An enrolled image the registry holds a row for but cannot produce as the bytes its hash names:
    ``reason`` ``missing`` (the sealed object is gone or outside the store) or ``tampered`` (it does
    not decrypt under the subject's key, or decrypts to other bytes). The message is what the caller
    is told (the subject and the image); ``cause`` is for the operator's log only (where the object
    was looked for: internal paths and URIs never go into an answer)."""

    status = 409

    def __init__(self, message: str, *, reason: str, cause: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.cause = cause


@dataclass(frozen=True)
class FetchVerdict:
    """Whether an enrolled image may be handed over, as the API answers it and the audit keeps it."""

    status: int  # 200, or 403 consent not active, 404 unknown, 409 stored image unreadable, 410 erased
    reason: str  # "ok", a consent denial reason, "erased", "unknown_subject", "unknown_image", "missing", "tampered"
    detail: str
    consent_version: int | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> str:
        return {403: "ConsentNotActive", 404: "NotFound", 409: "ImageUnreadable", 410: "ErasedError"}.get(self.status, "")

    def entry(self, actor: str, subject_id: str, sha256: str, method: str = "GET") -> AuditEntry:
        details: dict[str, Any] = {"sha256": sha256, "consent_version": self.consent_version}
        if method != "GET":  # a HEAD: checked and answered as a GET is, the bytes not sent
            details["method"] = method
        if self.allowed:
            return AuditEntry(actor, "image.fetched", subject_id, details)
        return AuditEntry(actor, "image.fetch_refused", subject_id, {**details, "status": self.status, "reason": self.reason})


def fetch_verdict(
    subject_id: str, sha256: str, *, subject: SubjectKey | None, terms: LeaseTerms | None, enrolled: bool, at: datetime
) -> FetchVerdict:
    """The rules, in order: an unknown subject is 404, an erased one 410 (whatever the image), consent
    not active at ``at`` 403 (a revoked face cannot be fetched at all), an image not enrolled 404."""
    if subject is None:
        return FetchVerdict(404, "unknown_subject", f"no subject {subject_id}")
    version = terms.consent_version if terms is not None else None
    if subject.wrapped_key is None or (terms is not None and terms.status == "ERASED"):
        return FetchVerdict(410, "erased", f"{subject_id} was erased: their images can no longer be read", version)
    if terms is None:
        return FetchVerdict(403, "no_consent", f"{subject_id} has no consent on record", None)
    if terms.status not in ACTIVE:
        return FetchVerdict(403, terms.status.lower(), f"consent v{version} of {subject_id} is {terms.status.lower()}", version)
    if terms.valid_until is not None and at >= terms.valid_until:
        return FetchVerdict(403, "expired", f"consent v{version} of {subject_id} expired at {terms.valid_until.isoformat()}", version)
    if at < terms.valid_from:
        return FetchVerdict(403, "not_yet_valid", f"consent v{version} of {subject_id} starts at {terms.valid_from.isoformat()}", version)
    if not enrolled:
        return FetchVerdict(404, "unknown_image", f"{subject_id} has no enrolled image {sha256}", version)
    return FetchVerdict(200, "ok", f"consent v{version} of {subject_id} is active", version)


def media_type(data: bytes) -> str:
    """The image's type by its signature (PNG, JPEG, WebP); anything else is plain bytes."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


async def fetch_enrolled_image(
    registry: Registry, subject_id: str, sha256: str, *, actor: str, method: str = "GET"
) -> tuple[FetchVerdict, bytes | None]:
    """The verdict (audited) and, when it allows, the decrypted bytes, which hash to ``sha256``. A
    stored image that cannot be produced as those bytes (its object gone, altered or swapped for
    another's) is refused 409, audited like any refusal: the registry never serves a face it cannot
    vouch for, and the caller's job fails rather than retrying what will not heal. ``method``: the
    HTTP method asked with (a HEAD is checked the same way and audited as one)."""
    async with registry.repository.connection() as store:
        first, subject, uri = await _look(store, subject_id, sha256, registry.clock(), for_update=False)
    data: bytes | None = None
    unreadable: FetchVerdict | None = None
    cause = ""
    if first.allowed and subject is not None and subject.wrapped_key is not None and uri is not None:
        try:
            data = await _read(registry, subject_id, sha256, subject.wrapped_key, uri)
        except ImageUnreadable as exc:
            unreadable = FetchVerdict(409, exc.reason, str(exc), first.consent_version)
            cause = exc.cause
    async with registry.repository.transaction() as store:
        verdict, _, _ = await _look(store, subject_id, sha256, registry.clock(), for_update=True)
        if verdict.allowed and unreadable is not None:
            verdict = unreadable
        elif verdict.allowed and data is None:
            verdict = first  # allowed only since the first look (granted, enrolled): what was answered stands
        await store.append_audit(verdict.entry(actor, subject_id, sha256, method))
    if verdict is unreadable:
        log.error("an enrolled image failed its integrity check; it is not served", subject_id=subject_id,
                  sha256=sha256, reason=verdict.reason, detail=verdict.detail, cause=cause)
    FETCHES.labels(verdict.reason).inc()
    return verdict, data if verdict.allowed else None


async def _look(
    store: Store, subject_id: str, sha256: str, at: datetime, *, for_update: bool
) -> tuple[FetchVerdict, SubjectKey | None, str | None]:
    subject = await store.subject_key(subject_id, for_update=for_update)
    terms = await store.latest_terms(subject_id) if subject is not None else None
    uri = await store.image_uri(subject_id, sha256) if subject is not None else None
    verdict = fetch_verdict(subject_id, sha256, subject=subject, terms=terms, enrolled=uri is not None, at=at)
    return verdict, subject, uri


async def _read(registry: Registry, subject_id: str, sha256: str, wrapped_key: bytes, uri: str) -> bytes:
    context = subject_id.encode()
    key = registry.wrapper.unwrap(wrapped_key, context)  # a key that does not unwrap is the registry's fault: a 500
    try:
        sealed = await asyncio.to_thread(registry.objects.get_bytes, uri)
    except (ObjectMissing, ObjectRefused) as exc:  # its message names the object's URI: the log's, not the caller's
        raise ImageUnreadable(f"{subject_id}'s enrolled image {sha256} is not in the registry's store",
                              reason="missing", cause=str(exc)) from None
    try:
        data = unseal(key, sealed, context)
    except DecryptError:  # AES-GCM authenticates: altered bytes, or another subject's sealed object
        raise ImageUnreadable(f"{subject_id}'s enrolled image {sha256} does not decrypt: the stored object was altered",
                              reason="tampered") from None
    if hashlib.sha256(data).hexdigest() != sha256:  # a sealed object of another image of this subject under this row
        raise ImageUnreadable(f"{subject_id}'s enrolled image {sha256} decrypts to other bytes", reason="tampered")
    return data
