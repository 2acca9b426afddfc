"""The consent rules, as one pure function every checkpoint shares: the registry (with what only it
knows: usage counts, embeddings) and each service's local view (with what the lease says)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reelfab.consent.lease import LeaseTerms

DENIAL_REASONS = (
    "no_consent", "invalid_lease", "revoked", "erased", "expired", "not_yet_valid",
    "out_of_scope_platform", "out_of_scope_tag", "out_of_scope_territory", "commercial_not_allowed",
    "image_not_enrolled", "identity_mismatch", "daily_cap_reached",
)
PURPOSES = ("plan", "swap", "render", "publish", "preview")


@dataclass(frozen=True)
class ConsentRequest:
    subject: str
    purpose: str
    platform: str
    at: datetime
    template_tags: Sequence[str] = ()
    territory: str | None = None
    commercial: bool = True
    image_sha256: str | None = None
    image_phash: str | None = None
    used_today: int | None = None  # known to the registry; local views leave it None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "ok" or one of DENIAL_REASONS
    detail: str
    consent_version: int | None = None

    @classmethod
    def deny(cls, reason: str, detail: str, version: int | None = None) -> Decision:
        assert reason in DENIAL_REASONS, reason
        return cls(False, reason, detail, version)


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two hex perceptual hashes of the same length."""
    if len(a) != len(b):
        return max(len(a), len(b)) * 4
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def decide(terms: LeaseTerms | None, req: ConsentRequest, *, phash_threshold: int = 8) -> Decision:
    if terms is None:
        return Decision.deny("no_consent", f"no consent on record for subject {req.subject}")
    v = terms.consent_version
    if terms.status == "REVOKED":
        return Decision.deny("revoked", f"consent v{v} of {req.subject} was revoked", v)
    if terms.status == "ERASED":
        return Decision.deny("erased", f"{req.subject}'s biometric data was erased", v)
    if terms.status == "EXPIRED" or (terms.valid_until is not None and req.at >= terms.valid_until):
        return Decision.deny("expired", f"consent v{v} of {req.subject} expired at {terms.valid_until}", v)
    if req.at < terms.valid_from:
        return Decision.deny("not_yet_valid", f"consent v{v} of {req.subject} starts at {terms.valid_from}", v)
    scope = terms.scope
    if req.platform not in scope.platforms:
        return Decision.deny("out_of_scope_platform", f"platform {req.platform!r} not in {sorted(scope.platforms)}", v)
    if scope.allowed_tags:
        outside = sorted(set(req.template_tags) - set(scope.allowed_tags))
        if outside:
            return Decision.deny("out_of_scope_tag", f"template tags {outside} not allowed (allowed: {sorted(scope.allowed_tags)})", v)
    if scope.territories and req.territory is not None and req.territory not in scope.territories:
        return Decision.deny("out_of_scope_territory", f"territory {req.territory!r} not in {sorted(scope.territories)}", v)
    if req.commercial and not scope.commercial_use:
        return Decision.deny("commercial_not_allowed", "consent does not cover commercial use", v)
    if req.image_sha256 is not None or req.image_phash is not None:
        denial = _image_denial(terms, req, phash_threshold)
        if denial:
            return denial
    if terms.daily_cap is not None and req.used_today is not None and req.used_today >= terms.daily_cap:
        return Decision.deny("daily_cap_reached", f"{req.used_today} uses today; the cap is {terms.daily_cap}", v)
    return Decision(True, "ok", f"consent v{v} of {req.subject} covers {req.purpose} on {req.platform}", v)


def _image_denial(terms: LeaseTerms, req: ConsentRequest, threshold: int) -> Decision | None:
    v = terms.consent_version
    if req.image_sha256 is not None and any(i.sha256 == req.image_sha256 for i in terms.images):
        return None
    if req.image_phash is not None:
        nearest = min((phash_distance(req.image_phash, i.phash) for i in terms.images), default=None)
        if nearest is not None and nearest <= threshold:
            return None  # the same picture re-encoded or resized: bytes differ, the image does not
        return Decision.deny(
            "image_not_enrolled",
            f"image is not among {req.subject}'s enrolled images (nearest perceptual distance {nearest}, at most {threshold})",
            v,
        )
    return Decision.deny("image_not_enrolled", f"image sha256 is not among {req.subject}'s enrolled images", v)
