"""The consent registry's HTTP API against the real PostgreSQL: tokens and roles, the error mapping
(404, 409, 410, 413, 422, 503, never a 5xx for bad input), and one subject's whole life through the
routes: create, enrol, grant, check, amend, lease, revoke, erase. The face engine is a stand-in
(see consent_api_support) so these tests do not depend on a real detector."""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from reelfab.consent.lease import SignedLease, public_key_from_text, verify
from reelfab.db import create_pool
from reelfab.settings import Settings
from reelfab_consent_registry import keys, tokens
from reelfab_consent_registry.api import build_api
from reelfab_consent_registry.domain import Post
from reelfab_consent_registry.use_cases import Registry
from tests.conftest import unique
from tests.integration.consent_api_support import (
    drop_schema,
    make_registry,
    make_schema,
    portrait_png,
    text_bytes,
)

pytestmark = pytest.mark.postgres


@dataclass
class Api:
    client: httpx.AsyncClient
    registry: Registry
    pool: asyncpg.Pool
    schema: str
    admin: dict[str, str]
    reader: dict[str, str]
    objects: Path


@pytest.fixture(scope="module")
async def api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    pool = await create_pool(stack)
    schema = unique("consent_api")
    await make_schema(pool, schema)
    objects = tmp_path_factory.mktemp("consent-objects")
    registry = make_registry(pool, schema, stack, objects)
    admin = await tokens.create_token(pool, schema, "ops-admin", "admin")
    reader = await tokens.create_token(pool, schema, "planner", "reader")
    app = build_api(registry, pool, schema)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(
            client,
            registry,
            pool,
            schema,
            {"Authorization": f"Bearer {admin}"},
            {"Authorization": f"Bearer {reader}"},
            objects,
        )
    await drop_schema(pool, schema)
    await pool.close()


async def _subject(api: Api, prefix: str = "s") -> str:
    subject_id = unique(prefix)
    r = await api.client.post(
        "/subjects", json={"subject_id": subject_id, "display_name": "Ada L."}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    return subject_id


async def _enrol(api: Api, subject_id: str, seed: int) -> httpx.Response:
    return await api.client.post(
        f"/subjects/{subject_id}/images",
        headers=api.admin,
        files={"image": ("ada.png", portrait_png(seed), "image/png")},
    )


def _grant_form(**fields: Any) -> dict[str, Any]:
    return {
        "platforms": ["tiktok", "youtube"],
        "allowed_tags": "dance,comedy",
        "territories": ["fr", "DE"],
        "commercial_use": "true",
        **fields,
    }


def _check(subject_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "subject": subject_id,
        "purpose": "swap",
        "platform": "tiktok",
        "template_tags": ["dance"],
        "territory": "FR",
        "commercial": True,
        **fields,
    }


def _error(r: httpx.Response, status: int, error: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    return str(body["detail"])


# -- tokens and roles ------------------------------------------------------------------------------


async def test_no_token_is_401_with_a_bearer_challenge(api: Api) -> None:
    r = await api.client.get("/subjects")
    assert "bearer token is required" in _error(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = await api.client.get("/subjects", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _error(r, 401, "Unauthorized")


async def test_an_unknown_or_revoked_token_is_401(api: Api) -> None:
    r = await api.client.get("/subjects", headers={"Authorization": "Bearer rfc_not-a-real-token"})
    assert "unknown or revoked" in _error(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"

    token = await tokens.create_token(api.pool, api.schema, "short-lived", "reader")
    assert (
        await api.client.get("/subjects", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200
    [info] = [t for t in await tokens.list_tokens(api.pool, api.schema) if t.name == "short-lived"]
    assert await tokens.revoke_token(api.pool, api.schema, info.token_id)
    assert not await tokens.revoke_token(api.pool, api.schema, info.token_id)
    r = await api.client.get("/subjects", headers={"Authorization": f"Bearer {token}"})
    _error(r, 401, "Unauthorized")


async def test_tokens_are_stored_as_hashes_only(api: Api) -> None:
    token = await tokens.create_token(api.pool, api.schema, "hash-check", "reader")
    stored = await api.pool.fetch(f'SELECT token_sha256 FROM "{api.schema}".api_tokens')
    assert all(token not in r["token_sha256"] for r in stored)
    assert await tokens.authenticate(api.pool, api.schema, token) == tokens.Principal("hash-check", "reader")
    with pytest.raises(ValueError, match="role"):
        await tokens.create_token(api.pool, api.schema, "x", "owner")


async def test_a_reader_reads_and_checks_but_does_not_write(api: Api) -> None:
    r = await api.client.post(
        "/subjects", json={"subject_id": unique("r"), "display_name": "R"}, headers=api.reader
    )
    assert "admin token" in _error(r, 403, "Forbidden")
    assert (await api.client.get("/subjects", headers=api.reader)).status_code == 200
    r = await api.client.post("/check", json=_check(unique("nobody")), headers=api.reader)
    assert r.status_code == 200 and r.json()["reason"] == "no_consent"


async def test_openapi_is_public_and_lists_the_routes(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "Reelfab consent registry"
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes >= {
        ("POST", "/subjects"),
        ("GET", "/subjects"),
        ("GET", "/subjects/{subject_id}"),
        ("POST", "/subjects/{subject_id}/images"),
        ("POST", "/subjects/{subject_id}/consents"),
        ("PATCH", "/subjects/{subject_id}/consents"),
        ("POST", "/subjects/{subject_id}/revoke"),
        ("POST", "/subjects/{subject_id}/erase"),
        ("GET", "/subjects/{subject_id}/lease"),
        ("POST", "/check"),
        ("GET", "/keys"),
        ("GET", "/audit/verify"),
    }
    assert "bearer" in spec["components"]["securitySchemes"]


# -- errors ----------------------------------------------------------------------------------------


async def test_create_then_duplicate_is_409(api: Api) -> None:
    subject_id = unique("dup")
    r = await api.client.post(
        "/subjects", json={"subject_id": subject_id, "display_name": "  Ada  "}, headers=api.admin
    )
    assert r.status_code == 201 and r.json() == {"subject_id": subject_id, "display_name": "Ada"}
    r = await api.client.post(
        "/subjects", json={"subject_id": subject_id, "display_name": "Ada"}, headers=api.admin
    )
    assert subject_id in _error(r, 409, "Conflict")


async def test_racing_creates_give_one_201_and_409s(api: Api) -> None:
    subject_id = unique("race")
    body = {"subject_id": subject_id, "display_name": "Ada"}
    responses = await asyncio.gather(
        *(api.client.post("/subjects", json=body, headers=api.admin) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409], [r.text for r in responses]


@pytest.mark.parametrize(
    "body",
    [
        {"subject_id": "has space", "display_name": "x"},
        {"subject_id": "x" * 65, "display_name": "x"},
        {"subject_id": "nul", "display_name": "a\x00b"},
        {"subject_id": "ok", "display_name": "x", "extra": 1},
        {"subject_id": "ok"},
        [],
    ],
    ids=["space", "too-long", "nul", "extra-field", "missing", "not-an-object"],
)
async def test_bad_subject_input_is_422(api: Api, body: Any) -> None:
    r = await api.client.post("/subjects", json=body, headers=api.admin)
    _error(r, 422, "ValidationError")
    assert r.json()["errors"]


async def test_malformed_json_is_422(api: Api) -> None:
    r = await api.client.post(
        "/subjects", content=b'{"subject_id": ', headers={**api.admin, "Content-Type": "application/json"}
    )
    assert "JSON" in _error(r, 422, "ValidationError")


async def test_unknown_subject_is_404_naming_it(api: Api) -> None:
    ghost = unique("ghost")
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/subjects/{ghost}", None),
        ("POST", f"/subjects/{ghost}/revoke", {"reason": "asked"}),
        ("POST", f"/subjects/{ghost}/erase", None),
        ("PATCH", f"/subjects/{ghost}/consents", {"daily_cap": 3}),
        ("GET", f"/subjects/{ghost}/lease", None),
    ]
    for method, path, body in calls:
        r = await api.client.request(method, path, headers=api.admin, json=body)
        assert ghost in _error(r, 404, "NotFound"), (method, path)


async def test_a_non_image_upload_is_422_naming_it(api: Api) -> None:
    subject_id = await _subject(api)
    r = await api.client.post(
        f"/subjects/{subject_id}/images",
        headers=api.admin,
        files={"image": ("notes.txt", text_bytes(300), "text/plain")},
    )
    detail = _error(r, 422, "Refused")
    assert "notes.txt" in detail and "not a PNG or JPEG" in detail
    r = await api.client.post(
        f"/subjects/{subject_id}/images",
        headers=api.admin,
        files={"image": ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/png")},
    )
    assert "not an image" in _error(r, 422, "Refused")
    r = await api.client.post(f"/subjects/{subject_id}/images", headers=api.admin, data={"image": "a string"})
    _error(r, 422, "ValidationError")


async def test_oversized_uploads_are_413_naming_the_limit(api: Api, stack: Settings) -> None:
    small = make_registry(api.pool, api.schema, stack, api.objects, max_upload_bytes=1000)
    app = build_api(small, api.pool, api.schema)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        subject_id = await _subject(api)
        # over the upload limit: refused while reading, before anything decodes it
        r = await client.post(
            f"/subjects/{subject_id}/images",
            headers=api.admin,
            files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(2000), "image/png")},
        )
        assert "1000-byte" in _error(r, 413, "TooLarge")
        r = await client.post(
            f"/subjects/{subject_id}/consents",
            headers=api.admin,
            data=_grant_form(),
            files={"document": ("consent.pdf", bytes(1001), "application/pdf")},
        )
        assert "1000-byte" in _error(r, 413, "TooLarge")
        # far over it: the body limit stops the request as it streams in (Content-Length first)
        r = await client.post(
            f"/subjects/{subject_id}/images",
            headers=api.admin,
            files={"image": ("huge.png", bytes(200_000), "image/png")},
        )
        assert f"{1000 + 64 * 1024}-byte" in _error(r, 413, "TooLarge")
        r = await client.post(
            "/check",
            headers=api.reader,
            json=_check(subject_id, image_base64=base64.b64encode(bytes(2000)).decode()),
        )
        assert "1000-byte" in _error(r, 413, "TooLarge")


async def test_a_huge_canvas_is_refused_before_decoding(api: Api) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    # a small, well-formed PNG whose header claims 20000x20000 pixels (1.2 GB once decoded)
    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )
    subject_id = await _subject(api)
    r = await api.client.post(
        f"/subjects/{subject_id}/images", headers=api.admin, files={"image": ("bomb.png", png, "image/png")}
    )
    assert "pixels" in _error(r, 413, "TooLarge")


async def test_grant_without_an_enrolled_image_is_422(api: Api) -> None:
    subject_id = await _subject(api)
    r = await api.client.post(
        f"/subjects/{subject_id}/consents",
        headers=api.admin,
        data=_grant_form(),
        files={"document": ("consent.pdf", b"%PDF-1.7 signed", "application/pdf")},
    )
    assert "no enrolled image" in _error(r, 422, "Refused")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"platforms": ""}, "platform"),
        ({"platforms": "tik tok"}, "platforms"),
        ({"territories": "FRA"}, "territories"),
        ({"daily_cap": "0"}, "daily_cap"),
        ({"valid_until": "not a date"}, "valid_until"),
        ({"valid_from": "0001-01-01T00:00:00+05:00"}, "valid_from"),
        ({"commercial_use": "perhaps"}, "commercial_use"),
    ],
    ids=["no-platform", "bad-platform", "bad-territory", "zero-cap", "bad-date", "year-one", "bad-bool"],
)
async def test_bad_grant_forms_are_422(api: Api, fields: dict[str, str], problem: str) -> None:
    subject_id = await _subject(api)
    r = await api.client.post(
        f"/subjects/{subject_id}/consents",
        headers=api.admin,
        data=_grant_form(**fields),
        files={"document": ("consent.pdf", b"%PDF-1.7 signed", "application/pdf")},
    )
    assert problem in _error(r, 422, "ValidationError")


async def test_revoke_or_amend_without_consent_is_409(api: Api) -> None:
    subject_id = await _subject(api)
    r = await api.client.post(f"/subjects/{subject_id}/revoke", json={"reason": "asked"}, headers=api.admin)
    assert subject_id in _error(r, 409, "Conflict")
    r = await api.client.patch(f"/subjects/{subject_id}/consents", json={"daily_cap": 2}, headers=api.admin)
    _error(r, 409, "Conflict")
    r = await api.client.patch(f"/subjects/{subject_id}/consents", json={}, headers=api.admin)
    assert "nothing to amend" in _error(r, 422, "ValidationError")


async def test_check_input_is_validated(api: Api) -> None:
    r = await api.client.post("/check", json=_check("x", purpose="sell"), headers=api.reader)
    _error(r, 422, "ValidationError")
    r = await api.client.post("/check", json=_check("x", image_base64="***"), headers=api.reader)
    assert "base64" in _error(r, 422, "ValidationError")
    r = await api.client.post(
        "/check", json=_check("x", image_base64=base64.b64encode(b"GIF89a....").decode()), headers=api.reader
    )
    assert "not a PNG or JPEG" in _error(r, 422, "Refused")
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    r = await api.client.post("/check", json=_check("x", at=later, consume=True, job_id="job-later"), headers=api.reader)
    assert "today" in _error(r, 422, "ValidationError")


async def test_without_a_signing_key_consent_is_503(api: Api, stack: Settings) -> None:
    schema = unique("consent_nokey")
    await make_schema(api.pool, schema, with_key=False)
    try:
        registry = make_registry(api.pool, schema, stack, api.objects)
        admin = {"Authorization": f"Bearer {await tokens.create_token(api.pool, schema, 'ops', 'admin')}"}
        app = build_api(registry, api.pool, schema)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            await client.post("/subjects", json={"subject_id": "ada", "display_name": "Ada"}, headers=admin)
            r = await client.post(
                "/subjects/ada/images",
                headers=admin,
                files={"image": ("ada.png", portrait_png(900), "image/png")},
            )
            assert r.status_code == 201, r.text
            r = await client.post(
                "/subjects/ada/consents",
                headers=admin,
                data=_grant_form(),
                files={"document": ("c.pdf", b"signed", "application/pdf")},
            )
            assert "signing key" in _error(r, 503, "NoSigningKey")
            assert (await client.get("/keys", headers=admin)).json() == {}
    finally:
        await drop_schema(api.pool, schema)


# -- a subject's life --------------------------------------------------------------------------------


async def test_keys_and_audit(api: Api) -> None:
    r = await api.client.get("/keys", headers=api.reader)
    assert r.status_code == 200
    expected = await keys.public_keys(api.pool, api.schema)
    assert set(r.json()) == set(expected) and len(expected) == 1
    r = await api.client.get("/audit/verify", headers=api.reader)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["first_broken"] is None


async def test_a_subject_from_enrolment_to_erasure(api: Api) -> None:
    subject_id = await _subject(api, "life")
    png = portrait_png(1)

    r = await api.client.post(
        f"/subjects/{subject_id}/images", headers=api.admin, files={"image": ("ada.png", png, "image/png")}
    )
    assert r.status_code == 201, r.text
    enrolled = r.json()
    assert enrolled["embedder"] == "stand-in-v1" and enrolled["qc"]["face_px"] >= 512
    r = await api.client.post(
        f"/subjects/{subject_id}/images", headers=api.admin, files={"image": ("ada.png", png, "image/png")}
    )
    assert "already enrolled" in _error(r, 409, "Conflict")

    r = await api.client.post(
        f"/subjects/{subject_id}/consents",
        headers=api.admin,
        data=_grant_form(daily_cap="1", valid_until="2999-01-01T00:00:00"),
        files={"document": ("consent.pdf", b"%PDF-1.7 signed by Ada", "application/pdf")},
    )
    assert r.status_code == 201, r.text
    granted = r.json()
    [key_id] = (await api.client.get("/keys", headers=api.reader)).json()
    assert granted["version"] == 1 and granted["status"] == "GRANTED" and granted["key_id"] == key_id
    assert granted["scope"] == {
        "platforms": ["tiktok", "youtube"],
        "allowed_tags": ["comedy", "dance"],
        "territories": ["DE", "FR"],
        "commercial_use": True,
    }
    assert granted["valid_until"].startswith("2999-01-01T00:00:00") and granted["daily_cap"] == 1
    r = await api.client.post(
        f"/subjects/{subject_id}/consents",
        headers=api.admin,
        data=_grant_form(),
        files={"document": ("again.pdf", b"again", "application/pdf")},
    )
    assert "amend" in _error(r, 409, "Conflict")

    image = base64.b64encode(png).decode()
    r = await api.client.post("/check", json=_check(subject_id, image_base64=image), headers=api.reader)
    assert r.json() == {"allowed": True, "reason": "ok", "detail": r.json()["detail"], "consent_version": 1}
    other = base64.b64encode(portrait_png(2)).decode()
    r = await api.client.post("/check", json=_check(subject_id, image_base64=other), headers=api.reader)
    assert r.json()["reason"] == "image_not_enrolled"
    r = await api.client.post("/check", json=_check(subject_id, platform="instagram"), headers=api.reader)
    assert r.json()["reason"] == "out_of_scope_platform"
    r = await api.client.post("/check", json=_check(subject_id, territory="us"), headers=api.reader)
    assert r.json()["reason"] == "out_of_scope_territory"
    r = await api.client.post(
        "/check", json=_check(subject_id, at="2999-06-01T00:00:00Z"), headers=api.reader
    )
    assert r.json()["reason"] == "expired"
    assert (
        await api.client.post("/check", json=_check(subject_id, consume=True, job_id="job-1"), headers=api.reader)
    ).json()["allowed"]
    r = await api.client.post("/check", json=_check(subject_id, consume=True, job_id="job-2"), headers=api.reader)
    assert r.json()["reason"] == "daily_cap_reached"

    r = await api.client.patch(
        f"/subjects/{subject_id}/consents",
        headers=api.admin,
        json={"platforms": ["tiktok", "instagram"], "daily_cap": 5, "reason": "new platform"},
    )
    assert r.status_code == 200, r.text
    amended = r.json()
    assert amended["version"] == 2 and amended["status"] == "AMENDED" and amended["daily_cap"] == 5
    assert amended["scope"]["platforms"] == ["instagram", "tiktok"] and amended["scope"]["allowed_tags"] == [
        "comedy",
        "dance",
    ]
    r = await api.client.post(
        "/check", json=_check(subject_id, platform="instagram", consume=True, job_id="job-3"), headers=api.reader
    )
    assert r.json()["allowed"] and r.json()["consent_version"] == 2

    r = await api.client.get(f"/subjects/{subject_id}/lease", headers=api.reader)
    lease = r.json()
    public = {
        k: public_key_from_text(v)
        for k, v in (await api.client.get("/keys", headers=api.reader)).json().items()
    }
    terms = verify(
        SignedLease(
            base64.b64decode(lease["payload"]), base64.b64decode(lease["signature"]), lease["key_id"]
        ),
        public,
    )
    assert terms.consent_version == 2 and terms.subject == subject_id

    async with api.pool.acquire() as conn:
        await api.registry.record_post(
            api.registry.repository.bound(conn),
            Post(
                post_id="p-1",
                platform="tiktok",
                subject_id=subject_id,
                job_id="j-1",
                consent_version=2,
                published_at=datetime.now(UTC),
            ),
        )
    r = await api.client.post(
        f"/subjects/{subject_id}/revoke", json={"reason": "subject asked"}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    revoked = r.json()
    assert revoked["version"] == 3 and revoked["status"] == "REVOKED"
    assert [(p["platform"], p["post_id"]) for p in revoked["takedown"]] == [("tiktok", "p-1")]
    r = await api.client.post("/check", json=_check(subject_id), headers=api.reader)
    assert r.json() == {**r.json(), "allowed": False, "reason": "revoked", "consent_version": 3}

    r = await api.client.post(f"/subjects/{subject_id}/erase", headers=api.admin)
    assert r.status_code == 200, r.text
    erased = r.json()
    assert erased["unreadable_embeddings"] == 1 and len(erased["unreadable_images"]) == 1
    r = await api.client.post(f"/subjects/{subject_id}/erase", headers=api.admin)
    assert "erased" in _error(r, 410, "ErasedError")
    r = await api.client.post(
        f"/subjects/{subject_id}/images",
        headers=api.admin,
        files={"image": ("new.png", portrait_png(3), "image/png")},
    )
    _error(r, 410, "ErasedError")

    r = await api.client.get(f"/subjects/{subject_id}", headers=api.reader)
    detail = r.json()
    assert [(v["version"], v["status"], v["actor"]) for v in detail["versions"]] == [
        (1, "GRANTED", "ops-admin"),
        (2, "AMENDED", "ops-admin"),
        (3, "REVOKED", "ops-admin"),
        (4, "ERASED", "ops-admin"),
    ]
    assert detail["erased_at"] is not None and detail["posts"][0]["post_id"] == "p-1"
    listed = {s["subject_id"]: s for s in (await api.client.get("/subjects", headers=api.reader)).json()}
    assert listed[subject_id]["status"] == "ERASED" and listed[subject_id]["images"] == 1

    audit = (await api.client.get("/audit/verify", headers=api.reader)).json()
    assert audit["ok"] and audit["entries"] >= 8
    actors = {
        r["actor"]
        for r in await api.pool.fetch(
            f'SELECT actor FROM "{api.schema}".audit_log WHERE subject_id = $1', subject_id
        )
    }
    assert actors == {"ops-admin", "planner"}  # the writer, and the reader whose checks were denied


async def test_a_second_persons_photo_is_refused(api: Api) -> None:
    first, second = await _subject(api, "p1"), await _subject(api, "p2")
    assert (await _enrol(api, first, 10)).status_code == 201
    r = await _enrol(api, second, 10)  # the same picture, so the same person, under another subject
    assert first in _error(r, 422, "Refused")
