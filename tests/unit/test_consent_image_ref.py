"""Enrolled images by reference: ``registry://subjects/<id>/images/<sha256>`` is made and parsed
strictly (hostile references are refused naming the bad part, other schemes are not ours); the
client's ``fetch_image`` maps the registry's answers (a refusal is permanent, an outage is not,
other bytes than the ones asked for or more than the size limit are rejected, a trickling answer
runs out of time); the registry's rules for handing an image over, and the use case on in-memory
adapters (no database): audited grants and refusals, a revocation racing the read, a stored object
that was altered, swapped or lost is refused 409. The route itself, on the real PostgreSQL and over
HTTP: tests/integration/test_registry_images.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import structlog

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.outage import outage_of
from reelfab.consent.client import DEFAULT_MAX_IMAGE_BYTES, RegistryClient
from reelfab.consent.images import (
    IMAGE_REF_SCHEME,
    ImageFetchRefused,
    ImageFetchRejected,
    image_ref,
    parse_image_ref,
)
from reelfab.consent.lease import LeaseTerms, Scope
from reelfab.contracts.codec import default_codec
from reelfab.errors import DependencyUnavailable, PermanentError, TransientError
from reelfab.identifiers import InvalidIdentifier
from reelfab.settings import Settings
from reelfab_consent_registry.api.image_access import fetch_enrolled_image, fetch_verdict, media_type
from reelfab_consent_registry.domain import SERVICE
from reelfab_consent_registry.memory import InMemoryRegistry, in_memory
from reelfab_consent_registry.repository import SubjectKey
from reelfab_consent_registry.use_cases import Registry
from tests.integration.consent_api_support import StandInEngine, portrait_png

IMAGE = b"\x89PNG\r\n\x1a\n" + b"pixels" * 20
SHA = hashlib.sha256(IMAGE).hexdigest()
REF = f"registry://subjects/ada-01/images/{SHA}"

# -- references ------------------------------------------------------------------------------------


def test_a_reference_round_trips() -> None:
    assert IMAGE_REF_SCHEME == "registry"
    assert image_ref("ada-01", SHA) == REF
    assert parse_image_ref(REF) == ("ada-01", SHA)
    assert parse_image_ref(image_ref("a.b~c_d-9", SHA)) == ("a.b~c_d-9", SHA)


@pytest.mark.parametrize(
    ("subject_id", "sha256", "named"),
    [
        ("ada/01", SHA, "subject_id"),
        ("..", SHA, "subject_id"),
        ("", SHA, "subject_id"),
        ("ada 01", SHA, "subject_id"),
        ("x" * 129, SHA, "subject_id"),
        ("ada-01", SHA.upper(), "sha256"),
        ("ada-01", SHA[:63], "sha256"),
        ("ada-01", SHA + "0", "sha256"),
        ("ada-01", SHA[:63] + "g", "sha256"),
        ("ada-01", SHA + "\n", "sha256"),
    ],
)
def test_making_a_reference_refuses_a_bad_part_naming_it(subject_id: str, sha256: str, named: str) -> None:
    with pytest.raises(PermanentError, match=named):
        image_ref(subject_id, sha256)


@pytest.mark.parametrize(
    "uri",
    [
        f"file:///var/reelfab/objects/faces/{SHA}.png",
        f"s3://bucket/faces/{SHA}.png",
        "faces/ada.png",
        "/abs/path/ada.png",
        "registryx://subjects/ada-01/images/x",
        "",
    ],
)
def test_other_schemes_are_not_registry_references(uri: str) -> None:
    assert parse_image_ref(uri) is None


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (f"registry://subjects/ada-01/images/{SHA}/", "exactly the path"),
        (f"registry://subjects/ada-01/images/{SHA}/extra", "exactly the path"),
        (f"registry://subjects/ada-01/extra/images/{SHA}", "exactly the path"),
        (f"registry://subjects/ada-01/faces/{SHA}", "exactly the path"),
        (f"registry://subjects//images/{SHA}", "subject_id"),
        (f"registry://subjects/../images/{SHA}", "subject_id"),
        (f"registry://subjects/./images/{SHA}", "subject_id"),
        (f"registry://subjects/ada-01/images/../{SHA}", "exactly the path"),
        (f"registry://subjects/ada-01/images/{SHA.upper()}", "sha256"),
        (f"registry://subjects/ada-01/images/{SHA[:40]}", "sha256"),
        ("registry://subjects/ada-01/images/", "sha256"),
        (f"registry://subjects/ada-01/images/{SHA}?v=1", "query string"),
        (f"registry://subjects/ada-01/images/{SHA}#frag", "fragment"),
        (f"registry://subjects/ada%2F01/images/{SHA}", "percent-encoding"),
        (f"registry://subjects/ada-01\\..\\x/images/{SHA}", "backslash"),
        (f"registry://subjects/ada 01/images/{SHA}", "subject_id"),
        (f"registry://subjects/ada-01\x00/images/{SHA}", "subject_id"),
        (f"REGISTRY://subjects/ada-01/images/{SHA}", "not of the form"),
        (f"Registry://subjects/ada-01/images/{SHA}", "not of the form"),
        (f" registry://subjects/ada-01/images/{SHA}", "not of the form"),
        (f"\x00registry://subjects/ada-01/images/{SHA}", "not of the form"),
        (f"registry:subjects/ada-01/images/{SHA}", "not of the form"),
        (f"registry:///subjects/ada-01/images/{SHA}", "not of the form"),
        (f"registry://user@subjects/ada-01/images/{SHA}", "not of the form"),
        (f"registry://subjects:443/ada-01/images/{SHA}", "not of the form"),
        (f"registry://evil.example/ada-01/images/{SHA}", "not of the form"),
        (f"registry://subjects/{'x' * 600}/images/{SHA}", "characters"),
    ],
)
def test_a_malformed_registry_reference_is_refused(uri: str, problem: str) -> None:
    with pytest.raises(PermanentError, match=problem):
        parse_image_ref(uri)


def test_a_reference_that_is_not_text_is_refused() -> None:
    with pytest.raises(PermanentError, match="not text"):
        parse_image_ref(b"registry://subjects/a/images/b")  # type: ignore[arg-type]


# -- the client ------------------------------------------------------------------------------------


def _client(handler: httpx.MockTransport) -> RegistryClient:
    return RegistryClient("http://registry", "token", transport=handler)


def test_fetch_image_gets_the_route_with_the_token_and_checks_the_hash() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=IMAGE, headers={"Content-Type": "image/png"})

    assert _client(httpx.MockTransport(answer)).fetch_image("ada-01", SHA) == IMAGE
    [request] = seen
    assert request.method == "GET" and request.url.path == f"/subjects/ada-01/images/{SHA}"
    assert request.headers["Authorization"] == "Bearer token"


def test_fetch_image_refuses_other_bytes_than_those_asked_for() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"another face"))
    with pytest.raises(PermanentError, match="not the one asked for"):
        _client(transport).fetch_image("ada-01", SHA)


@pytest.mark.parametrize(("subject_id", "sha256"), [("../keys", SHA), ("ada-01", "../../keys"), ("ada-01", SHA.upper())])
def test_fetch_image_validates_before_asking(subject_id: str, sha256: str) -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"asked {request.url}")

    with pytest.raises(PermanentError):
        _client(httpx.MockTransport(never)).fetch_image(subject_id, sha256)
    if subject_id != "ada-01":
        with pytest.raises(InvalidIdentifier, match="subject_id"):
            _client(httpx.MockTransport(never)).fetch_image(subject_id, sha256)


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [(403, "ConsentNotActive", "revoked"), (404, "NotFound", "unknown_image"), (410, "ErasedError", "erased")],
)
def test_a_refused_fetch_is_permanent_naming_status_and_reason(status: int, error: str, reason: str) -> None:
    body = {"error": error, "detail": "consent v3 of ada-01 is revoked", "reason": reason}
    transport = httpx.MockTransport(lambda r: httpx.Response(status, json=body))
    with pytest.raises(ImageFetchRefused) as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert isinstance(caught.value, PermanentError) and outage_of(caught.value) is None
    assert caught.value.status == status and caught.value.reason == reason
    assert f"{status} {error} ({reason})" in str(caught.value) and "consent v3" in str(caught.value)


def test_a_refusal_without_a_json_body_still_names_its_status() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, text="<html>not here</html>"))
    with pytest.raises(ImageFetchRefused, match="404") as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert caught.value.reason is None


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_or_unavailable_answer_is_an_outage(status: int) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(status, json={"detail": "database away"}))
    with pytest.raises(DependencyUnavailable) as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert outage_of(caught.value) == "consent registry"


def test_a_registry_that_does_not_answer_is_an_outage() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(DependencyUnavailable, match="does not answer"):
        _client(httpx.MockTransport(refuse)).fetch_image("ada-01", SHA)


def test_other_answers_keep_their_mapping() -> None:
    with pytest.raises(TransientError) as caught:
        _client(httpx.MockTransport(lambda r: httpx.Response(500, text="boom"))).fetch_image("ada-01", SHA)
    assert not isinstance(caught.value, DependencyUnavailable)
    with pytest.raises(PermanentError) as refused:
        _client(httpx.MockTransport(lambda r: httpx.Response(401, json={"detail": "no"}))).fetch_image("ada-01", SHA)
    assert not isinstance(refused.value, ImageFetchRefused)
    # the JSON routes are unchanged: a 404 there is a plain PermanentError
    with pytest.raises(PermanentError) as keys:
        _client(httpx.MockTransport(lambda r: httpx.Response(404, json={"detail": "x"}))).public_keys()
    assert not isinstance(keys.value, ImageFetchRefused)
    keys_body = json.dumps({"k1": "abc"})
    assert _client(httpx.MockTransport(lambda r: httpx.Response(200, text=keys_body)))._call("GET", "/keys") == {
        "k1": "abc"
    }


# -- what the registry hands over ------------------------------------------------------------------

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LIVE = SubjectKey(b"wrapped", None)


def _terms(status: str = "GRANTED", *, valid_from: datetime | None = None, valid_until: datetime | None = None) -> LeaseTerms:
    return LeaseTerms(
        subject="ada-01",
        consent_version=3,
        status=status,
        scope=Scope(("tiktok",)),
        valid_from=valid_from or NOW - timedelta(days=1),
        valid_until=valid_until,
        daily_cap=None,
        images=(),
        embedding_digest="",
        document_sha256="d" * 64,
        issued_at=NOW - timedelta(days=1),
    )


@pytest.mark.parametrize(
    ("subject", "terms", "enrolled", "status", "reason"),
    [
        (None, None, False, 404, "unknown_subject"),
        (SubjectKey(None, NOW), _terms("ERASED"), True, 410, "erased"),
        (SubjectKey(None, NOW), _terms("ERASED"), False, 410, "erased"),  # whatever the image: gone
        (LIVE, None, True, 403, "no_consent"),
        (LIVE, _terms("REVOKED"), True, 403, "revoked"),
        (LIVE, _terms("REVOKED"), False, 403, "revoked"),  # a revoked subject's images: not even probed
        (LIVE, _terms("EXPIRED"), True, 403, "expired"),
        (LIVE, _terms(valid_until=NOW), True, 403, "expired"),
        (LIVE, _terms(valid_from=NOW + timedelta(seconds=1)), True, 403, "not_yet_valid"),
        (LIVE, _terms(), False, 404, "unknown_image"),
        (LIVE, _terms(), True, 200, "ok"),
        (LIVE, _terms("AMENDED", valid_until=NOW + timedelta(seconds=1)), True, 200, "ok"),
    ],
)
def test_an_image_is_handed_over_only_while_consent_is_active(
    subject: SubjectKey | None, terms: LeaseTerms | None, enrolled: bool, status: int, reason: str
) -> None:
    verdict = fetch_verdict("ada-01", SHA, subject=subject, terms=terms, enrolled=enrolled, at=NOW)
    assert (verdict.status, verdict.reason) == (status, reason)
    entry = verdict.entry("swapper", "ada-01", SHA)
    assert entry.details["sha256"] == SHA and entry.subject_id == "ada-01" and entry.actor == "swapper"
    assert entry.action == ("image.fetched" if status == 200 else "image.fetch_refused")
    assert all(not isinstance(v, bytes) for v in entry.details.values())


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (IMAGE, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "application/octet-stream"),
        (b"GIF89a", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_the_media_type_is_sniffed_from_the_signature(data: bytes, kind: str) -> None:
    assert media_type(data) == kind


# -- more hostile references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (f"registry://subjects/ada-01/images/{SHA}\n", "sha256"),  # a trailing newline is not "the end"
        (f"registry://subjects/ada-01/images/{SHA} ", "sha256"),
        (f"registry://subjects/ada-01/images/{SHA};v=1", "sha256"),
        (f"registry://subjects/ada-01/images/{SHA}\x00", "sha256"),
        (f"registry://subjects/ada-01\t/images/{SHA}", "subject_id"),
        (f"registry://subjects/\u0430da-01/images/{SHA}", "subject_id"),  # a Cyrillic a: not an identifier
        (f"registry://subjects/ada\uff0f01/images/{SHA}", "exactly the path|subject_id"),  # a fullwidth slash
        (f"registry://subjects/.hidden/images/{SHA}", "subject_id"),
        (f"registry://subjects/ada-01/images/%2e%2e%2f{SHA}", "percent-encoding"),
        (f"registry://subjects/ada%252F01/images/{SHA}", "percent-encoding"),  # encoded twice: still refused
        (f"registry://subjects/%2E%2E/images/{SHA}", "percent-encoding"),
        (f"registry://subjects/ada-01/images//{SHA}", "exactly the path"),
        (f"registry://subjects/ada-01//images/{SHA}", "exactly the path"),
        (f"registry://subjects/ada-01/images/{SHA}/..", "exactly the path"),
        ("registry://subjects", "not of the form"),
        ("registry://", "not of the form"),
        ("registry:", "not of the form"),
        ("\tregistry://subjects/ada-01/images/" + SHA, "not of the form"),
        (f"registry://subjects/{'a' * 129}/images/{SHA}", "subject_id"),  # one over the identifier limit
        ("registry://subjects/" + "a/" * 300 + SHA, "characters"),  # overlong: refused before it is split
    ],
)
def test_a_hostile_registry_reference_is_refused_naming_the_bad_part(uri: str, problem: str) -> None:
    with pytest.raises(PermanentError, match=problem):
        parse_image_ref(uri)


@pytest.mark.parametrize("value", [None, 42, ["registry://subjects/ada-01/images/" + SHA]])
def test_a_reference_of_another_type_is_refused(value: object) -> None:
    with pytest.raises(PermanentError, match="not text"):
        parse_image_ref(value)  # type: ignore[arg-type]


def test_the_longest_valid_reference_parses() -> None:
    longest = image_ref("a" * 128, SHA)
    assert parse_image_ref(longest) == ("a" * 128, SHA)


# -- the client: limits, time, odd answers ---------------------------------------------------------


def test_an_image_over_the_size_limit_is_rejected_as_announced() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=IMAGE))
    client = RegistryClient("http://registry", "token", transport=transport, max_image_bytes=len(IMAGE) - 1)
    with pytest.raises(ImageFetchRejected, match=f"announced {len(IMAGE)} bytes, over the {len(IMAGE) - 1}-byte"):
        client.fetch_image("ada-01", SHA)
    exact = RegistryClient("http://registry", "token", transport=transport, max_image_bytes=len(IMAGE))
    assert exact.fetch_image("ada-01", SHA) == IMAGE  # the limit itself is allowed


def test_an_image_over_the_size_limit_without_a_length_is_cut_off_unread() -> None:
    served: list[int] = []

    def endless() -> Iterator[bytes]:
        for _ in range(1000):
            served.append(1)
            yield b"x" * 1024

    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=endless()))
    client = RegistryClient("http://registry", "token", transport=transport, max_image_bytes=4096)
    with pytest.raises(ImageFetchRejected, match="more than the 4096-byte image limit"):
        client.fetch_image("ada-01", SHA)
    assert len(served) < 10  # stopped at the limit, not read to the end


def test_other_bytes_are_rejected_as_permanent_not_refused() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"another face"))
    with pytest.raises(ImageFetchRejected) as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert isinstance(caught.value, PermanentError) and not isinstance(caught.value, ImageFetchRefused)


def test_a_trickling_answer_is_an_outage_once_the_fetch_time_is_up() -> None:
    def trickle() -> Iterator[bytes]:
        for byte in IMAGE:
            time.sleep(0.02)
            yield bytes([byte])

    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=trickle()))
    client = RegistryClient("http://registry", "token", transport=transport, fetch_timeout_s=0.1)
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="within its time limit"):
        client.fetch_image("ada-01", SHA)
    assert time.monotonic() - started < 2


def test_a_read_timeout_is_an_outage() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(DependencyUnavailable) as caught:
        _client(httpx.MockTransport(slow)).fetch_image("ada-01", SHA)
    assert outage_of(caught.value) == "consent registry"


def test_a_tampered_image_refusal_is_permanent() -> None:
    body = {"error": "ImageUnreadable", "detail": "does not decrypt", "reason": "tampered"}
    transport = httpx.MockTransport(lambda r: httpx.Response(409, json=body))
    with pytest.raises(ImageFetchRefused) as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert caught.value.status == 409 and caught.value.reason == "tampered"


@pytest.mark.parametrize("status", [204, 302, 304])
def test_an_answer_that_is_not_the_image_is_refused(status: int) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(status, headers={"Location": "http://elsewhere/"}))
    with pytest.raises(PermanentError, match=f"answered {status}, not 200"):
        _client(transport).fetch_image("ada-01", SHA)


def test_only_a_bounded_part_of_an_error_answer_is_read() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, content=b"<html>" + b"x" * 10_000_000))
    with pytest.raises(ImageFetchRefused) as caught:
        _client(transport).fetch_image("ada-01", SHA)
    assert len(str(caught.value)) < 1000


def test_from_settings_limits_images_to_what_the_registry_accepts() -> None:
    settings = Settings(consent_token="t", consent_max_upload_bytes=50 * 1024 * 1024)
    assert RegistryClient.from_settings(settings).max_image_bytes == 50 * 1024 * 1024
    assert RegistryClient.from_settings(Settings(consent_token="t")).max_image_bytes == DEFAULT_MAX_IMAGE_BYTES
    with pytest.raises(ValueError, match="positive"):
        RegistryClient("http://registry", "t", max_image_bytes=0)


# -- the registry handing an image over (in memory: no database) -----------------------------------

REG_NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
PORTRAIT, OTHER = portrait_png(7), portrait_png(8)

def _recoded(png: bytes) -> bytes:
    """The same pixels encoded otherwise: other bytes, the same person to the stand-in engine."""
    pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    recoded: bytes = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    assert recoded != png
    return recoded


SAME_FACE = _recoded(PORTRAIT)


@pytest.fixture
def reg() -> InMemoryRegistry:
    bus = InMemoryBus(Settings(), SERVICE, default_codec())
    return in_memory(bus, engine_factory=StandInEngine, clock=lambda: REG_NOW)  # type: ignore[arg-type]


async def _granted(registry: Registry, subject: str = "ada", image: bytes = PORTRAIT) -> str:
    await registry.enrol(subject, image, "ops", create_name=subject.title())
    await registry.grant(subject, document=b"signed form", scope=Scope(("tiktok",)), valid_from=None,
                         valid_until=None, daily_cap=None, actor="ops")
    return hashlib.sha256(image).hexdigest()


def _fetches(reg: InMemoryRegistry) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r["action"], r["actor"], r["details"]) for r in reg.repository.state.audit_log
            if r["action"].startswith("image.fetch")]


async def test_an_active_subjects_image_is_handed_over_and_audited(reg: InMemoryRegistry) -> None:
    sha = await _granted(reg.wired.registry)
    verdict, data = await fetch_enrolled_image(reg.wired.registry, "ada", sha, actor="swapper")
    assert (verdict.status, verdict.reason, data) == (200, "ok", PORTRAIT)
    [(action, actor, details)] = _fetches(reg)
    assert (action, actor) == ("image.fetched", "swapper") and details["sha256"] == sha
    assert details["consent_version"] == verdict.consent_version == 1


async def test_a_revoked_subjects_image_is_refused_and_the_refusal_audited(reg: InMemoryRegistry) -> None:
    sha = await _granted(reg.wired.registry)
    await reg.wired.registry.revoke("ada", actor="ops", reason="asked to")
    verdict, data = await fetch_enrolled_image(reg.wired.registry, "ada", sha, actor="swapper")
    assert (verdict.status, verdict.reason, data) == (403, "revoked", None)
    [(action, _, details)] = _fetches(reg)
    assert action == "image.fetch_refused" and details["reason"] == "revoked" and details["status"] == 403


async def test_a_revocation_while_the_image_is_read_wins(reg: InMemoryRegistry) -> None:
    """The bytes are read outside any transaction; a revocation that commits meanwhile is seen by the
    locked second look, so the bytes read are not handed over."""
    registry = reg.wired.registry
    sha = await _granted(registry)
    loop = asyncio.get_running_loop()
    read = reg.objects.get_bytes

    def read_then_revoke(uri: str, *, expect_sha256: str | None = None) -> bytes:
        data = read(uri)
        asyncio.run_coroutine_threadsafe(registry.revoke("ada", actor="ops", reason="now"), loop).result(5)
        return data

    reg.objects.get_bytes = read_then_revoke  # type: ignore[method-assign]
    verdict, data = await fetch_enrolled_image(registry, "ada", sha, actor="swapper")
    assert (verdict.status, verdict.reason, data) == (403, "revoked", None)
    assert [a for a, _, _ in _fetches(reg)] == ["image.fetch_refused"]


@pytest.mark.parametrize("how", ["flipped", "another-image", "another-subject", "gone"])
async def test_a_stored_image_that_fails_its_integrity_check_is_refused_409_and_audited(
    reg: InMemoryRegistry, how: str
) -> None:
    registry = reg.wired.registry
    sha = await _granted(registry)
    uri = await reg.repository.bound(None).image_uri("ada", sha)
    assert uri is not None
    if how == "flipped":
        sealed = bytearray(reg.objects.objects[uri])
        sealed[len(sealed) // 2] ^= 1
        reg.objects.objects[uri] = bytes(sealed)
    elif how == "another-image":  # the subject's own other image, sealed with the same key, under this row
        other = hashlib.sha256(SAME_FACE).hexdigest()
        await registry.enrol("ada", SAME_FACE, "ops")
        other_uri = await reg.repository.bound(None).image_uri("ada", other)
        assert other_uri is not None
        reg.objects.objects[uri] = reg.objects.objects[other_uri]
    elif how == "another-subject":
        vera = await _granted(registry, "vera", OTHER)
        vera_uri = await reg.repository.bound(None).image_uri("vera", vera)
        assert vera_uri is not None
        reg.objects.objects[uri] = reg.objects.objects[vera_uri]
    else:
        del reg.objects.objects[uri]
    with structlog.testing.capture_logs() as logs:
        verdict, data = await fetch_enrolled_image(registry, "ada", sha, actor="swapper")
    reason = "missing" if how == "gone" else "tampered"
    assert (verdict.status, verdict.reason, verdict.error, data) == (409, reason, "ImageUnreadable", None)
    assert (_fetches(reg)[-1][0], _fetches(reg)[-1][2]["reason"]) == ("image.fetch_refused", reason)
    # the answer names the subject and the image, never where or how the registry keeps it
    assert f"ada's enrolled image {sha}" in verdict.detail
    assert uri not in verdict.detail and "://" not in verdict.detail
    assert not any(uri in json.dumps(d, default=str) for _, _, d in _fetches(reg))
    [logged] = [e for e in logs if e["log_level"] == "error"]
    assert (logged["subject_id"], logged["sha256"], logged["reason"]) == ("ada", sha, reason)
    if how == "gone":  # the operator's log keeps what the caller is not told
        assert uri in logged["cause"]


async def test_an_erased_or_unknown_subject_and_an_unknown_image_are_refused(reg: InMemoryRegistry) -> None:
    registry = reg.wired.registry
    sha = await _granted(registry)
    other = hashlib.sha256(OTHER).hexdigest()
    assert (await fetch_enrolled_image(registry, "ada", other, actor="s"))[0].reason == "unknown_image"
    assert (await fetch_enrolled_image(registry, "nobody", sha, actor="s"))[0].reason == "unknown_subject"
    await registry.revoke("ada", actor="ops", reason="asked to")
    await registry.erase("ada", actor="ops")
    verdict, data = await fetch_enrolled_image(registry, "ada", sha, actor="s")
    assert (verdict.status, verdict.reason, data) == (410, "erased", None)
    assert [d["reason"] for _, _, d in _fetches(reg)] == ["unknown_image", "unknown_subject", "erased"]


async def test_an_unexpected_error_answers_500_without_its_internals() -> None:
    """An error the registry has no answer for is a 500 that names no path, URI or message of its
    own: those go to the log, the caller gets the class and a pointer to it."""
    from fastapi import FastAPI

    from reelfab_consent_registry.api.errors import install_error_handlers

    secret = "/srv/registry/objects/consent/ada/0123-4567.sealed"
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/denied")
    async def denied() -> None:
        raise PermissionError(13, "Permission denied", secret)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError(f"cannot open file://{secret}")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with structlog.testing.capture_logs() as logs:
            r = await client.get("/denied")
        assert r.status_code == 500 and r.json()["error"] == "InternalError", r.text
        assert secret not in r.text and "PermissionError" in r.json()["detail"]
        [logged] = [e for e in logs if e["log_level"] == "error"]
        assert secret in logged["error"] and logged["path"] == "/denied"
        r = await client.get("/bug")  # no handler of ours: the server's plain 500, which names nothing either
        assert r.status_code == 500 and secret not in r.text
