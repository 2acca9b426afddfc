"""Pure decisions of the registry: which images may join a subject, what a new consent version
looks like, what a revocation must list, what an event from another service adds to the audit
chain, and what a checkpoint seen on the topic means. No I/O; tested with plain values."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from reelfab.consent.decision import DENIAL_REASONS, Decision
from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope, SignedLease
from reelfab.contracts.generated.records import (
    ConsentChange,
    ConsentChanged,
    ConsentLease,
    ConsentScope,
    EnrolledImage,
)

from .errors import Conflict, Refused

SERVICE = "consent-registry"
ACTIVE = ("GRANTED", "AMENDED")
SUBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
Vector = NDArray[Any]


@dataclass(frozen=True)
class AuditEntry:
    """One entry for the audit chain (ids and hashes only, never biometrics)."""

    actor: str
    action: str
    subject_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Post:
    """A post that used a subject's face: what a revocation lists for takedown."""

    post_id: str
    platform: str
    subject_id: str
    job_id: str
    consent_version: int | None
    published_at: datetime


def check_new_subject(subject_id: str, display_name: str) -> None:
    if not SUBJECT_ID.fullmatch(subject_id):
        raise Refused(f"subject id {subject_id!r} must be 1-64 ASCII letters, digits, '-' or '_'")
    if not display_name.strip():
        raise Refused("display name must not be empty")


def sealed_image_key(subject_id: str, image_sha256: str, sealed: bytes) -> str:
    """Where a sealed enrolled image is stored: named by the image and by the sealed bytes themselves
    (a fresh nonce each time), so no two enrolment attempts ever share an object, and cleaning up a
    refused one can never remove the object a committed enrolment points at."""
    return f"consent/{subject_id}/{image_sha256}-{hashlib.sha256(sealed).hexdigest()[:32]}.sealed"


@dataclass(frozen=True)
class KnownIdentity:
    subject_id: str
    embeddings: Sequence[Vector]


def check_enrolment(
    subject_id: str,
    embedding: Vector,
    own: Sequence[Vector],
    others: Sequence[KnownIdentity],
    threshold: float,
    distance: Callable[[Vector, Vector], float] | None = None,
) -> None:
    """Refuse a second person's photo under this subject, and a photo of someone enrolled elsewhere."""
    _distance = distance or euclidean
    if own:
        nearest = min(_distance(embedding, e) for e in own)
        if nearest >= threshold:
            raise Refused(
                f"the face does not match {subject_id}'s enrolled images (identity distance {nearest:.3f}, "
                f"same person below {threshold:.3f}): a different person cannot be enrolled under this subject"
            )
    for other in others:
        if other.subject_id == subject_id or not other.embeddings:
            continue
        nearest = min(_distance(embedding, e) for e in other.embeddings)
        if nearest < threshold:
            raise Refused(
                f"the face matches another enrolled subject ({other.subject_id}, distance {nearest:.3f}); "
                "one person, one subject"
            )


def embedding_digest(embeddings: Sequence[Vector]) -> str:
    """sha256 over the subject's enrolled embeddings (float32 bytes, in enrolment order)."""
    digest = hashlib.sha256()
    for e in embeddings:
        digest.update(np.asarray(e, np.float32).tobytes())
    return digest.hexdigest()


def next_terms(
    previous: LeaseTerms | None,
    *,
    subject_id: str,
    status: str,
    now: datetime,
    images: Sequence[EnrolledImageRef],
    embeddings_digest: str,
    scope: Scope | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    daily_cap: int | None = None,
    document_sha256: str | None = None,
    keep_previous: bool = True,
) -> LeaseTerms:
    """The next version of a subject's consent. Grant starts afresh; amend, revoke, expire and erase
    carry the previous terms forward with what changed."""
    if status == "GRANTED":
        if scope is None or document_sha256 is None:
            raise Refused("a grant needs a scope and the signed consent document")
        if not images:
            raise Refused(f"{subject_id} has no enrolled image: enrol a photo before granting consent")
    elif status == "ERASED" and previous is None:
        pass  # enrolled but never granted: erasure needs no consent to end
    else:
        verb = {"AMENDED": "amend", "REVOKED": "revoke", "EXPIRED": "expire", "ERASED": "erase"}[status]
        if previous is None:
            raise Conflict(f"{subject_id} has no consent to {verb}")
        if status in ("AMENDED", "REVOKED") and previous.status not in ACTIVE:
            raise Conflict(f"{subject_id}'s consent is {previous.status.lower()}; nothing to {'amend' if status == 'AMENDED' else 'revoke'}")
        if status == "ERASED" and previous.status in ACTIVE:
            raise Conflict(f"revoke {subject_id}'s consent before erasing their biometric data")
    base = previous if (previous is not None and keep_previous and status != "GRANTED") else None
    vf = valid_from or (base.valid_from if base else now)
    vu = valid_until if valid_until is not None else (base.valid_until if base else None)
    for moment in (vf, vu):
        if moment is not None and not 1970 <= moment.year <= 9999:
            raise Refused(f"{moment.isoformat()} is outside the years 1970-9999")
    if vu is not None and vu <= vf:
        raise Refused(f"valid_until ({vu.isoformat()}) must be after valid_from ({vf.isoformat()})")
    if daily_cap is not None and daily_cap < 1:
        raise Refused("daily_cap must be at least 1 (or absent for no cap)")
    return LeaseTerms(
        subject=subject_id,
        consent_version=(previous.consent_version + 1) if previous else 1,
        status=status,
        scope=scope or (base.scope if base else Scope()),
        valid_from=vf,
        valid_until=vu,
        daily_cap=daily_cap if daily_cap is not None else (base.daily_cap if base else None),
        images=tuple(images),
        embedding_digest=embeddings_digest,
        document_sha256=document_sha256 or (base.document_sha256 if base else ""),
        issued_at=now,
    )


def euclidean(a: Vector, b: Vector) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def consent_event(terms: LeaseTerms, lease: SignedLease, display_name: str, *, event_id: str, reason: str | None,
                  takedown: Sequence[str], document_uri: str | None) -> ConsentChanged:
    """The ConsentChanged record announcing a new consent version (with its signed lease)."""
    return ConsentChanged(
        event_id=event_id,
        occurred_at=terms.issued_at,
        producer=SERVICE,
        subject_id=terms.subject,
        change=cast(ConsentChange, terms.status),
        consent_version=terms.consent_version,
        display_name=display_name,
        document_sha256=terms.document_sha256,
        document_uri=document_uri,
        scope=ConsentScope(platforms=list(terms.scope.platforms), allowed_tags=list(terms.scope.allowed_tags),
                           territories=list(terms.scope.territories), commercial_use=terms.scope.commercial_use),
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        daily_cap=terms.daily_cap,
        enrolled_images=[EnrolledImage(sha256=i.sha256, phash=i.phash, embedder=i.embedder) for i in terms.images],
        embedding_digest=terms.embedding_digest,
        lease=ConsentLease(payload=lease.payload, signature=lease.signature, key_id=lease.key_id),
        reason=reason,
        takedown_post_ids=list(takedown),
    )


def consent_changed_entry(terms: LeaseTerms, lease: SignedLease, actor: str, *, reason: str | None,
                          takedown: Sequence[str]) -> AuditEntry:
    return AuditEntry(actor, f"consent.{terms.status.lower()}", terms.subject,
                      {"version": terms.consent_version, "lease_sha256": hashlib.sha256(lease.payload).hexdigest(),
                       "reason": reason, "takedown": list(takedown)})


def identity_decision(decision: Decision, subject_id: str, nearest: float | None, threshold: float) -> Decision:
    """An allowed check, narrowed by how far the image's face is from the subject's enrolled ones
    (``nearest`` None: enrolled with another embedder, so the image hashes decided)."""
    if nearest is None or nearest < threshold:
        return decision
    return Decision.deny("identity_mismatch",
                         f"face is not {subject_id} (identity distance {nearest:.3f}, same person below {threshold:.3f})",
                         decision.consent_version)


def check_denied_entry(decision: Decision, *, subject_id: str, actor: str, purpose: str, platform: str,
                       image_facts: Mapping[str, Any], job_id: str | None) -> AuditEntry:
    details: dict[str, Any] = {"reason": decision.reason, "purpose": purpose, "platform": platform, **image_facts}
    if job_id is not None:
        details["job_id"] = job_id
    return AuditEntry(actor, "consent.denied", subject_id, details)


@dataclass(frozen=True)
class ReportedDenial:
    """A consent denial another stage decided (job.failed with a consent reason)."""

    subject_id: str | None
    reason: str
    stage: str
    job_id: str

    def entry(self) -> AuditEntry:
        return AuditEntry(self.stage, "consent.denied.reported", self.subject_id,
                          {"reason": self.reason, "stage": self.stage, "job_id": self.job_id})


def reported_denial(*, reason_code: str, subject_id: str | None, stage: str, job_id: str) -> ReportedDenial | None:
    """job.failed joins the audit chain only when its reason is a consent decision; the planner and
    analytics deal with the rest."""
    reason = reason_code.removeprefix("consent.")
    if reason not in DENIAL_REASONS:
        return None
    return ReportedDenial(subject_id, reason, stage, job_id)


def flag_entry(*, producer: str, subject_id: str, subject_kind: str, action: str, reason: str) -> AuditEntry:
    """A subject.flagged event, as the audit chain keeps it."""
    return AuditEntry(producer, "subject.flagged", subject_id, {"kind": subject_kind, "action": action, "reason": reason})


CheckpointVerdict = Literal["newer", "replay", "known"]


def checkpoint_verdict(last_count: int | None, seen_count: int) -> CheckpointVerdict:
    """A genuine checkpoint of this log seen on the topic, against the newest one the registry knows
    (its entry count; None: none yet): a newer one is what the next checkpoint must extend; an older
    one published again is a replay (someone rewinding the evidence)."""
    if last_count is not None and seen_count < last_count:
        return "replay"
    if last_count is None or seen_count > last_count:
        return "newer"
    return "known"
