"""Enrolled images by reference, against the real PostgreSQL: ``GET /subjects/{id}/images/{sha256}``
hands the bytes to a caller with a valid token only while the subject's consent is active, with
private headers; every answer past the token gate is audited (and the chain still verifies); a
refusal names its reason code; a stored object that was altered is refused, not served; a path that
tries to leave the route is refused. Then ``RegistryClient.fetch_image`` against the app served
over real HTTP (uvicorn on a local port): the bytes, each refusal as ImageFetchRefused with its
reason, a bad token as a plain PermanentError, the registry gone as an outage."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from reelfab.bus.outage import outage_of
from reelfab.consent.client import RegistryClient
from reelfab.consent.images import ImageFetchRefused, image_ref, parse_image_ref
from reelfab.consent.lease import Scope
from reelfab.db import create_pool
from reelfab.errors import DependencyUnavailable, PermanentError
from reelfab.settings import Settings
from reelfab_consent_registry import tokens
from reelfab_consent_registry.api import build_api
from reelfab_consent_registry.audit_trail import utc_now
from reelfab_consent_registry.use_cases import Registry
from tests.conftest import unique
from tests.integration.consent_api_support import drop_schema, make_registry, make_schema, portrait_png

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SCOPE = Scope(("tiktok",), (), (), True)


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Any
    registry: Registry
    pool: asyncpg.Pool
    schema: str
    reader: str  # the swapper's token
    admin: str
    objects: Path

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.reader}"}


@pytest.fixture(scope="module")
async def api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    pool = await create_pool(stack)
    schema = unique("registry_images")
    await make_schema(pool, schema)
    objects = tmp_path_factory.mktemp("registry-images")
    registry = make_registry(pool, schema, stack, objects)
    reader = await tokens.create_token(pool, schema, "swapper-gpu", "reader")
    admin = await tokens.create_token(pool, schema, "ops-admin", "admin")
    app = build_api(registry, pool, schema)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, app, registry, pool, schema, reader, admin, objects)
    await drop_schema(pool, schema)
    await pool.close()


_seeds = iter(range(9100, 10_000))


async def _subject(api: Api, *, grant: bool = True, **terms: Any) -> tuple[str, str, bytes]:
    """A new subject with one enrolled portrait (consent granted unless ``grant`` is False)."""
    subject_id, image = unique("face").replace("_", "-"), portrait_png(next(_seeds))
    result = await api.registry.enrol(subject_id, image, "ops", create_name="Ada L.")
    if grant:
        options: dict[str, Any] = {"valid_from": None, "valid_until": None, "daily_cap": None}
        await api.registry.grant(subject_id, document=b"signed form", scope=SCOPE, actor="ops", **{**options, **terms})
    return subject_id, str(result["sha256"]), image


async def _audited(api: Api, subject_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await api.pool.fetch(
        f'SELECT actor, action, details FROM "{api.schema}".audit_log WHERE subject_id = $1 '
        "AND action LIKE 'image.fetch%' ORDER BY seq",
        subject_id,
    )
    return [(r["actor"], r["action"], json.loads(r["details"])) for r in rows]


def _refused(r: httpx.Response, status: int, reason: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["reason"] == reason, body
    assert r.headers["cache-control"] == "no-store, private"
    return str(body["detail"])


async def _stored_path(api: Api, subject_id: str, sha: str) -> Path:
    uri = await api.pool.fetchval(
        f'SELECT image_uri FROM "{api.schema}".enrolled_images WHERE subject_id = $1 AND sha256 = $2', subject_id, sha
    )
    path = Path(str(uri).removeprefix("file://"))
    assert path.is_file() and api.objects in path.parents
    return path


# -- the route ------------------------------------------------------------------------------------


async def test_an_active_subjects_image_is_served_privately_and_audited(api: Api) -> None:
    subject_id, sha, image = await _subject(api)
    r = await api.client.get(f"/subjects/{subject_id}/images/{sha}", headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.content == image and hashlib.sha256(r.content).hexdigest() == sha
    assert r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store, private" and r.headers["pragma"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    [(actor, action, details)] = await _audited(api, subject_id)
    assert (actor, action, details["sha256"], details["consent_version"]) == ("swapper-gpu", "image.fetched", sha, 1)
    verified = (await api.client.get("/audit/verify", headers=api.auth())).json()
    assert verified["ok"], verified


async def test_the_planners_reference_names_exactly_this_route(api: Api) -> None:
    subject_id, sha, image = await _subject(api)
    ref = parse_image_ref(image_ref(subject_id, sha))
    assert ref is not None
    r = await api.client.get(f"/subjects/{ref[0]}/images/{ref[1]}", headers=api.auth())
    assert r.status_code == 200 and r.content == image


async def test_no_wrong_or_revoked_token_gets_nothing_and_leaves_no_fetch_audited(api: Api) -> None:
    subject_id, sha, _ = await _subject(api)
    path = f"/subjects/{subject_id}/images/{sha}"
    r = await api.client.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and b"PNG" not in r.content
    r = await api.client.get(path, headers=api.auth("rfc_not-a-real-token"))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    r = await api.client.get(path, headers={"Authorization": f"Basic {api.reader}"})
    assert r.status_code == 401
    short = await tokens.create_token(api.pool, api.schema, "short-lived", "reader")
    assert (await api.client.get(path, headers=api.auth(short))).status_code == 200
    [info] = [t for t in await tokens.list_tokens(api.pool, api.schema) if t.name == "short-lived"]
    assert await tokens.revoke_token(api.pool, api.schema, info.token_id)
    assert (await api.client.get(path, headers=api.auth(short))).status_code == 401
    assert [(a, act) for a, act, _ in await _audited(api, subject_id)] == [("short-lived", "image.fetched")]


async def test_a_revoked_subjects_image_is_refused_403_and_the_refusal_audited(api: Api) -> None:
    subject_id, sha, _ = await _subject(api)
    path = f"/subjects/{subject_id}/images/{sha}"
    assert (await api.client.get(path, headers=api.auth())).status_code == 200
    await api.registry.revoke(subject_id, actor="ops", reason="asked to")
    r = await api.client.get(path, headers=api.auth())
    assert "revoked" in _refused(r, 403, "revoked") and r.json()["error"] == "ConsentNotActive"
    assert b"PNG" not in r.content
    audited = await _audited(api, subject_id)
    assert [act for _, act, _ in audited] == ["image.fetched", "image.fetch_refused"]
    assert audited[-1][2] == {"sha256": sha, "consent_version": 2, "status": 403, "reason": "revoked"}


async def test_expired_not_yet_valid_and_missing_consent_are_refused_403(api: Api) -> None:
    now = utc_now()
    expiring, sha, _ = await _subject(api, valid_until=now + timedelta(hours=1))
    later, sha_later, _ = await _subject(api, valid_from=now + timedelta(days=1))
    bare, sha_bare, _ = await _subject(api, grant=False)
    _refused(await api.client.get(f"/subjects/{later}/images/{sha_later}", headers=api.auth()), 403, "not_yet_valid")
    _refused(await api.client.get(f"/subjects/{bare}/images/{sha_bare}", headers=api.auth()), 403, "no_consent")
    assert (await api.client.get(f"/subjects/{expiring}/images/{sha}", headers=api.auth())).status_code == 200
    api.registry.clock = lambda: now + timedelta(hours=2)
    try:
        r = await api.client.get(f"/subjects/{expiring}/images/{sha}", headers=api.auth())
    finally:
        api.registry.clock = utc_now
    assert "expired" in _refused(r, 403, "expired")
    assert [d.get("reason") for _, _, d in await _audited(api, expiring)] == [None, "expired"]


async def test_unknown_subjects_images_and_erased_subjects_are_refused(api: Api) -> None:
    subject_id, sha, _ = await _subject(api)
    stranger = hashlib.sha256(b"someone else").hexdigest()
    _refused(await api.client.get(f"/subjects/{subject_id}/images/{stranger}", headers=api.auth()), 404, "unknown_image")
    _refused(await api.client.get(f"/subjects/nobody-{sha[:8]}/images/{sha}", headers=api.auth()), 404, "unknown_subject")
    await api.registry.revoke(subject_id, actor="ops", reason="asked to")
    await api.registry.erase(subject_id, actor="ops")
    r = await api.client.get(f"/subjects/{subject_id}/images/{sha}", headers=api.auth())
    assert "erased" in _refused(r, 410, "erased") and r.json()["error"] == "ErasedError"


async def test_an_altered_stored_image_is_refused_409_not_served(api: Api) -> None:
    subject_id, sha, image = await _subject(api)
    stored = await _stored_path(api, subject_id, sha)
    sealed = bytearray(stored.read_bytes())
    sealed[-20] ^= 0x01  # one bit of the ciphertext or its tag
    stored.write_bytes(bytes(sealed))
    r = await api.client.get(f"/subjects/{subject_id}/images/{sha}", headers=api.auth())
    assert "altered" in _refused(r, 409, "tampered") and r.json()["error"] == "ImageUnreadable"
    assert image not in r.content
    [(_, action, details)] = await _audited(api, subject_id)
    assert (action, details["reason"], details["status"]) == ("image.fetch_refused", "tampered", 409)
    stored.unlink()  # the object gone: refused as well, with its own reason
    r = await api.client.get(f"/subjects/{subject_id}/images/{sha}", headers=api.auth())
    detail = _refused(r, 409, "missing")
    assert f"{subject_id}'s enrolled image {sha}" in detail
    # where the registry keeps its objects is its own business: no path, no URI in the answer
    for internal in (str(stored), stored.name, str(api.objects), "file:", "://", ".sealed"):
        assert internal not in r.text, (internal, r.text)
    [*_, (_, action, details)] = await _audited(api, subject_id)
    assert (action, details["reason"], details["status"]) == ("image.fetch_refused", "missing", 409)


@pytest.mark.parametrize(
    "path",
    [
        "/subjects/{s}/images/{SHA}",  # upper-case hex: not the canonical hash
        "/subjects/{s}/images/{sha}x",
        "/subjects/{s}/images/{short}",
        "/subjects/%2e%2e/images/{sha}",
        "/subjects/{s}%2F..%2F..%2Fkeys/images/{sha}",
        "/subjects/{s}/images/..%2F..%2F..%2Fkeys",
        "/subjects/{s}/images/{sha}%00",
        "/subjects/{s}/images/{sha}/..",
        "/subjects/{s}/images/%2e%2e%2f{sha}",
        "/subjects/{s}.png/images/{sha}",
    ],
)
async def test_a_path_that_is_not_exactly_the_route_gets_no_image(api: Api, path: str) -> None:
    subject_id, sha, image = await _subject(api)
    url = path.format(s=subject_id, sha=sha, SHA=sha.upper(), short=sha[:40])
    r = await api.client.send(api.client.build_request("GET", httpx.URL("http://test" + url), headers=api.auth()))
    assert r.status_code in (404, 405, 422), (url, r.status_code, r.text[:200])
    assert image not in r.content and r.headers["content-type"].startswith("application/json")
    assert await _audited(api, subject_id) == []  # refused before any use case ran


async def test_head_answers_as_get_does_without_the_bytes_and_is_audited(api: Api, served: str) -> None:
    """HEAD is one of the route's methods, as the 405 of any other says: the same checks, the same
    status and headers as GET (the length of the image included), no body, audited as a HEAD."""
    subject_id, sha, image = await _subject(api)
    path = f"/subjects/{subject_id}/images/{sha}"
    async with httpx.AsyncClient(base_url=served) as http:  # real HTTP: a HEAD answer has no body on the wire
        head = await http.head(path, headers=api.auth())
        got = await http.get(path, headers=api.auth())
        assert (head.status_code, head.content, got.status_code, got.content) == (200, b"", 200, image)
        for name in ("content-type", "content-length", "cache-control", "pragma", "x-content-type-options"):
            assert head.headers[name] == got.headers[name], name
        assert head.headers["content-length"] == str(len(image))
        assert (await http.head(path)).status_code == 401  # the token gate first, as for GET
        await api.registry.revoke(subject_id, actor="ops", reason="asked to")
        refused = await http.head(path, headers=api.auth())
        assert (refused.status_code, refused.content) == (403, b"")
        assert refused.headers["cache-control"] == "no-store, private"
    audited = await _audited(api, subject_id)
    assert [(act, d.get("method"), d.get("reason")) for _, act, d in audited] == [
        ("image.fetched", "HEAD", None), ("image.fetched", None, None), ("image.fetch_refused", "HEAD", "revoked")]
    verified = (await api.client.get("/audit/verify", headers=api.auth())).json()
    assert verified["ok"], verified


@pytest.mark.parametrize("method", ["DELETE", "PUT", "POST", "OPTIONS"])
async def test_other_methods_are_405_naming_get_and_head(api: Api, method: str) -> None:
    subject_id, sha, image = await _subject(api)
    r = await api.client.request(method, f"/subjects/{subject_id}/images/{sha}", headers=api.auth())
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", r.text
    assert r.json()["error"] == "MethodNotAllowed" and r.json()["detail"].endswith("allowed: GET, HEAD")
    assert image not in r.content and await _audited(api, subject_id) == []


async def test_the_route_is_documented(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    operation = spec["paths"]["/subjects/{subject_id}/images/{sha256}"]["get"]
    assert {"200", "401", "403", "404", "409", "410", "422", "503"} <= set(operation["responses"])
    assert "image/png" in operation["responses"]["200"]["content"]


# -- the client, over real HTTP --------------------------------------------------------------------


@pytest.fixture
async def served(api: Api) -> AsyncIterator[str]:
    """The app on a local port, served by uvicorn on this test's loop (the pool's loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_fetch_image_gets_the_bytes_and_each_refusal_as_its_reason(api: Api, served: str) -> None:
    client = RegistryClient(served, api.reader, timeout_s=5)
    subject_id, sha, image = await _subject(api)
    assert await asyncio.to_thread(client.fetch_image, subject_id, sha) == image

    stranger = hashlib.sha256(b"someone else").hexdigest()
    with pytest.raises(ImageFetchRefused) as unknown:
        await asyncio.to_thread(client.fetch_image, subject_id, stranger)
    assert (unknown.value.status, unknown.value.reason) == (404, "unknown_image")

    await api.registry.revoke(subject_id, actor="ops", reason="asked to")
    with pytest.raises(ImageFetchRefused) as revoked:
        await asyncio.to_thread(client.fetch_image, subject_id, sha)
    assert (revoked.value.status, revoked.value.reason) == (403, "revoked")
    assert "403 ConsentNotActive (revoked)" in str(revoked.value) and outage_of(revoked.value) is None


async def test_fetch_image_with_a_bad_token_is_permanent_not_a_refusal(api: Api, served: str) -> None:
    subject_id, sha, _ = await _subject(api)
    with pytest.raises(PermanentError, match="401") as caught:
        await asyncio.to_thread(RegistryClient(served, "rfc_wrong", timeout_s=5).fetch_image, subject_id, sha)
    assert not isinstance(caught.value, ImageFetchRefused)


async def test_fetch_image_of_an_altered_stored_image_is_refused(api: Api, served: str) -> None:
    subject_id, sha, _ = await _subject(api)
    other_id, other_sha, _ = await _subject(api)
    # another subject's sealed image under this row: it does not decrypt under this subject's key
    (await _stored_path(api, subject_id, sha)).write_bytes((await _stored_path(api, other_id, other_sha)).read_bytes())
    with pytest.raises(ImageFetchRefused) as caught:
        await asyncio.to_thread(RegistryClient(served, api.reader, timeout_s=5).fetch_image, subject_id, sha)
    assert (caught.value.status, caught.value.reason) == (409, "tampered")


async def test_fetch_image_from_a_registry_that_is_gone_is_an_outage(api: Api) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = RegistryClient(f"http://127.0.0.1:{port}", api.reader, timeout_s=2)
    with pytest.raises(DependencyUnavailable) as caught:
        await asyncio.to_thread(client.fetch_image, "ada-01", hashlib.sha256(b"x").hexdigest())
    assert outage_of(caught.value) == "consent registry"
