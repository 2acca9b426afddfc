"""Consent leases: the essentials of a consent record, serialised canonically and signed by the
registry with Ed25519. Any service verifies them with the registry's public keys; none can forge or
alter one. The lease holds hashes only (images, embeddings, the signed document), never biometrics."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from reelfab.errors import PermanentError

LEASE_FORMAT = 1


class LeaseInvalid(PermanentError):
    """A lease whose signature does not verify, signed by an unknown key, or malformed."""


@dataclass(frozen=True)
class Scope:
    platforms: tuple[str, ...] = ()
    allowed_tags: tuple[str, ...] = ()  # empty: any template tag
    territories: tuple[str, ...] = ()  # empty: anywhere
    commercial_use: bool = False

    def canonical(self) -> dict[str, Any]:
        return {
            "platforms": sorted(set(self.platforms)),
            "allowed_tags": sorted(set(self.allowed_tags)),
            "territories": sorted(set(self.territories)),
            "commercial_use": self.commercial_use,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scope:
        return cls(tuple(d.get("platforms", ())), tuple(d.get("allowed_tags", ())), tuple(d.get("territories", ())),
                   bool(d.get("commercial_use", False)))


@dataclass(frozen=True)
class EnrolledImageRef:
    sha256: str
    phash: str  # hex perceptual hash
    embedder: str


@dataclass(frozen=True)
class LeaseTerms:
    """What the registry signs."""

    subject: str
    consent_version: int
    status: str  # GRANTED | AMENDED | REVOKED | EXPIRED | ERASED
    scope: Scope
    valid_from: datetime
    valid_until: datetime | None
    daily_cap: int | None
    images: tuple[EnrolledImageRef, ...]
    embedding_digest: str
    document_sha256: str
    issued_at: datetime
    key_id: str = ""
    format: int = LEASE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active_status(self) -> bool:
        return self.status in ("GRANTED", "AMENDED")

    def canonical_bytes(self) -> bytes:
        doc = {
            "format": self.format,
            "subject": self.subject,
            "consent_version": self.consent_version,
            "status": self.status,
            "scope": self.scope.canonical(),
            "valid_from": _ts(self.valid_from),
            "valid_until": _ts(self.valid_until) if self.valid_until else None,
            "daily_cap": self.daily_cap,
            "images": sorted((asdict(i) for i in self.images), key=lambda i: i["sha256"]),
            "embedding_digest": self.embedding_digest,
            "document_sha256": self.document_sha256,
            "issued_at": _ts(self.issued_at),
            "key_id": self.key_id,
            "extra": self.extra,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> LeaseTerms:
        try:
            d = json.loads(payload)
            return cls(
                subject=d["subject"],
                consent_version=int(d["consent_version"]),
                status=d["status"],
                scope=Scope.from_dict(d["scope"]),
                valid_from=_parse_ts(d["valid_from"]),
                valid_until=_parse_ts(d["valid_until"]) if d.get("valid_until") else None,
                daily_cap=d.get("daily_cap"),
                images=tuple(EnrolledImageRef(**i) for i in d.get("images", [])),
                embedding_digest=d.get("embedding_digest", ""),
                document_sha256=d.get("document_sha256", ""),
                issued_at=_parse_ts(d["issued_at"]),
                key_id=d.get("key_id", ""),
                format=int(d.get("format", LEASE_FORMAT)),
                extra=d.get("extra", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LeaseInvalid(f"lease payload is malformed: {exc}") from None


@dataclass(frozen=True)
class SignedLease:
    payload: bytes
    signature: bytes
    key_id: str

    def terms(self) -> LeaseTerms:
        return LeaseTerms.from_bytes(self.payload)


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short stable id: the first 16 hex digits of the raw public key."""
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()[:16]


def sign(terms: LeaseTerms, private: Ed25519PrivateKey) -> SignedLease:
    key_id = key_id_of(private.public_key())
    payload = LeaseTerms(**{**terms.__dict__, "key_id": key_id}).canonical_bytes()
    return SignedLease(payload, private.sign(payload), key_id)


def verify(lease: SignedLease, public_keys: dict[str, Ed25519PublicKey]) -> LeaseTerms:
    """The lease's terms if its signature verifies under the named key; LeaseInvalid otherwise."""
    key = public_keys.get(lease.key_id)
    if key is None:
        raise LeaseInvalid(f"lease signed by unknown key {lease.key_id!r}; known: {', '.join(public_keys) or 'none'}")
    try:
        key.verify(lease.signature, lease.payload)
    except InvalidSignature:
        raise LeaseInvalid(f"lease signature does not verify under key {lease.key_id} (tampered or forged)") from None
    terms = LeaseTerms.from_bytes(lease.payload)
    if terms.key_id != lease.key_id:
        raise LeaseInvalid("lease names a different key inside than outside")
    return terms


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key as distributed to services: base64 of the 32 raw bytes."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip()))
    except ValueError as exc:
        raise LeaseInvalid(f"not an Ed25519 public key (base64 of 32 bytes): {exc}") from None


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
