"""Leases, the consent rules and the local view, without a broker or a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reelfab.consent.decision import ConsentRequest, decide, phash_distance
from reelfab.consent.lease import (
    EnrolledImageRef,
    LeaseInvalid,
    LeaseTerms,
    Scope,
    SignedLease,
    public_key_from_text,
    public_key_text,
    sign,
    verify,
)
from reelfab.consent.view import ConsentView
from reelfab_consent_registry.domain import KnownIdentity, check_enrolment, next_terms
from reelfab_consent_registry.errors import Conflict, Refused

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
IMAGE = EnrolledImageRef("aa" * 32, "f0f0f0f0f0f0f0f0", "dlib_resnet_v1")


def terms(**kw: object) -> LeaseTerms:
    base = LeaseTerms(
        subject="face-1", consent_version=1, status="GRANTED",
        scope=Scope(("tiktok",), ("dance", "comedy"), ("DE", "FR"), True),
        valid_from=NOW - timedelta(days=1), valid_until=NOW + timedelta(days=30), daily_cap=3,
        images=(IMAGE,), embedding_digest="d" * 64, document_sha256="e" * 64, issued_at=NOW,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> ConsentRequest:
    base = ConsentRequest("face-1", "swap", "tiktok", NOW, ("dance",), "DE", True, IMAGE.sha256)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_signed_lease_verifies_and_round_trips() -> None:
    lease = sign(terms(), KEY)
    public = {lease.key_id: public_key_from_text(public_key_text(KEY.public_key()))}
    got = verify(lease, public)
    assert got.subject == "face-1" and got.scope.platforms == ("tiktok",) and got.key_id == lease.key_id
    assert got.valid_until == NOW + timedelta(days=30)


@pytest.mark.parametrize("field", ["payload", "signature"])
def test_a_tampered_lease_is_rejected(field: str) -> None:
    lease = sign(terms(), KEY)
    public = {lease.key_id: KEY.public_key()}
    if field == "payload":
        bad = SignedLease(lease.payload.replace(b'"tiktok"', b'"youtube"'), lease.signature, lease.key_id)
    else:
        bad = SignedLease(lease.payload, bytes(64), lease.key_id)
    with pytest.raises(LeaseInvalid, match="does not verify"):
        verify(bad, public)


def test_a_lease_from_an_unknown_key_is_rejected() -> None:
    lease = sign(terms(), Ed25519PrivateKey.generate())
    with pytest.raises(LeaseInvalid, match="unknown key"):
        verify(lease, {"other": KEY.public_key()})


def test_allowed_within_scope() -> None:
    d = decide(terms(), req())
    assert d.allowed and d.reason == "ok" and d.consent_version == 1


@pytest.mark.parametrize(
    ("lease_kw", "req_kw", "reason"),
    [
        ({"status": "REVOKED"}, {}, "revoked"),
        ({"status": "ERASED"}, {}, "erased"),
        ({"valid_until": NOW - timedelta(seconds=1)}, {}, "expired"),
        ({"valid_from": NOW + timedelta(days=1)}, {}, "not_yet_valid"),
        ({}, {"platform": "youtube"}, "out_of_scope_platform"),
        ({}, {"template_tags": ("dance", "horror")}, "out_of_scope_tag"),
        ({}, {"territory": "US"}, "out_of_scope_territory"),
        ({"scope": Scope(("tiktok",), (), (), False)}, {}, "commercial_not_allowed"),
        ({}, {"image_sha256": "bb" * 32, "image_phash": None}, "image_not_enrolled"),
        ({}, {"image_sha256": "bb" * 32, "image_phash": "0f0f0f0f0f0f0f0f"}, "image_not_enrolled"),
        ({}, {"used_today": 3}, "daily_cap_reached"),
    ],
)
def test_each_denial_names_its_reason(lease_kw: dict[str, object], req_kw: dict[str, object], reason: str) -> None:
    d = decide(terms(**lease_kw), req(**req_kw))
    assert not d.allowed and d.reason == reason, d


def test_no_consent() -> None:
    assert decide(None, req()).reason == "no_consent"


def test_a_re_encoded_copy_within_the_perceptual_threshold_is_the_same_image() -> None:
    near = "f0f0f0f0f0f0f0f1"  # one bit away
    assert phash_distance(near, IMAGE.phash) == 1
    assert decide(terms(), req(image_sha256="cc" * 32, image_phash=near)).allowed


def _event(t: LeaseTerms, key: Ed25519PrivateKey = KEY) -> dict[str, object]:
    lease = sign(t, key)
    return {"subject_id": t.subject, "lease": {"payload": lease.payload, "signature": lease.signature, "key_id": lease.key_id}}


def test_the_view_applies_revocations_and_ignores_stale_or_forged_events() -> None:
    view = ConsentView({sign(terms(), KEY).key_id: KEY.public_key()}, service="swapper-gpu")
    assert view.apply(_event(terms())).outcome == "applied"
    assert view.check(req()).allowed
    assert view.apply(_event(terms(consent_version=2, status="REVOKED"))).outcome == "applied"
    assert view.check(req()).reason == "revoked"
    assert view.apply(_event(terms(consent_version=1))).outcome == "stale"  # a late copy of v1
    assert view.check(req()).reason == "revoked"
    forged = view.apply(_event(terms(consent_version=3), Ed25519PrivateKey.generate()))
    assert forged.outcome == "invalid" and view.check(req()).reason == "invalid_lease"  # fails closed
    assert view.apply(_event(terms(consent_version=3))).outcome == "applied"  # a verifiable lease clears it
    assert view.check(req()).allowed
    assert view.apply({"subject_id": "face-1", "lease": None}).outcome == "invalid"
    assert not view.check(req()).allowed


def test_next_terms_versions_and_transitions() -> None:
    first = next_terms(None, subject_id="s", status="GRANTED", now=NOW, images=[IMAGE], embeddings_digest="d",
                       scope=Scope(("tiktok",)), document_sha256="e")
    assert first.consent_version == 1
    amended = next_terms(first, subject_id="s", status="AMENDED", now=NOW, images=[IMAGE], embeddings_digest="d", daily_cap=5)
    assert amended.consent_version == 2 and amended.scope == first.scope and amended.daily_cap == 5
    revoked = next_terms(amended, subject_id="s", status="REVOKED", now=NOW, images=[IMAGE], embeddings_digest="d")
    with pytest.raises(Conflict, match="nothing to revoke"):
        next_terms(revoked, subject_id="s", status="REVOKED", now=NOW, images=[IMAGE], embeddings_digest="d")
    with pytest.raises(Conflict, match="revoke"):
        next_terms(amended, subject_id="s", status="ERASED", now=NOW, images=[IMAGE], embeddings_digest="d")
    with pytest.raises(Refused, match="no enrolled image"):
        next_terms(None, subject_id="s", status="GRANTED", now=NOW, images=[], embeddings_digest="", scope=Scope(), document_sha256="e")
    with pytest.raises(Refused, match="must be after"):
        next_terms(None, subject_id="s", status="GRANTED", now=NOW, images=[IMAGE], embeddings_digest="d", scope=Scope(),
                   document_sha256="e", valid_until=NOW - timedelta(days=1))


def test_enrolment_refuses_a_second_person_and_someone_enrolled_elsewhere() -> None:
    me = np.zeros(4, np.float32)
    check_enrolment("s", me + 0.1, [me], [], threshold=0.6)  # same person: fine
    with pytest.raises(Refused, match="does not match s's enrolled images"):
        check_enrolment("s", me + 1.0, [me], [], threshold=0.6)
    with pytest.raises(Refused, match="matches another enrolled subject \\(t"):
        check_enrolment("s", me, [], [KnownIdentity("t", [me + 0.05])], threshold=0.6)
