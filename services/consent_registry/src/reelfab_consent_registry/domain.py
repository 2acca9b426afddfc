"""Pure decisions of the registry: which images may join a subject, what a new consent version
looks like, and what a revocation must list. No I/O; tested with plain values."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope

from .errors import Conflict, Refused

ACTIVE = ("GRANTED", "AMENDED")


@dataclass(frozen=True)
class KnownIdentity:
    subject_id: str
    embeddings: Sequence[np.ndarray]


def check_enrolment(
    subject_id: str,
    embedding: np.ndarray,
    own: Sequence[np.ndarray],
    others: Sequence[KnownIdentity],
    threshold: float,
    distance: Callable[[np.ndarray, np.ndarray], float] | None = None,
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


def embedding_digest(embeddings: Sequence[np.ndarray]) -> str:
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


def euclidean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
