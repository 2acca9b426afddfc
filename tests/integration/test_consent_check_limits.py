"""/check and the registry's limits: a job's use is counted once however often it is delivered
(job_id), face images are bounded in pixels (refused from the header), decoded reduced, and face work
runs at most ``face_concurrency`` at a time; the API refuses loose JSON types (0 is not false, nor a
time), answers undeclared methods 405 with an Allow header, and documents every status it answers."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import httpx
import numpy as np
import pytest

from reelfab.consent.client import RegistryClient
from reelfab.consent.decision import ConsentRequest
from reelfab.consent.lease import Scope
from reelfab.db import create_pool
from reelfab.errors import PermanentError
from reelfab.settings import Settings
from reelfab_consent_registry import tokens
from reelfab_consent_registry.api import build_api
from reelfab_consent_registry.config import RegistryConfig
from reelfab_consent_registry.use_cases import Registry
from tests.conftest import unique
from tests.integration.consent_api_support import (
    StandInEngine,
    drop_schema,
    make_registry,
    make_schema,
    portrait_png,
)

pytestmark = pytest.mark.postgres


class CountingEngine(StandInEngine):
    """The stand-in engine, slowed down, counting how many images it works on at once and what
    shapes it was given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.shapes: list[tuple[int, ...]] = []

    def prepare_source(self, image: np.ndarray) -> Any:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.shapes.append(image.shape)
        try:
            time.sleep(0.15)
            return super().prepare_source(image)
        finally:
            with self.lock:
                self.active -= 1


@dataclass
class Api:
    client: httpx.AsyncClient
    registry: Registry
    pool: asyncpg.Pool
    schema: str
    admin: dict[str, str]
    engine: CountingEngine


@pytest.fixture
async def api(stack: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    pool = await create_pool(stack)
    schema = unique("consent_limits")
    await make_schema(pool, schema)
    engine = CountingEngine()
    registry = make_registry(pool, schema, stack, tmp_path, engine=engine,
                             config=RegistryConfig(face_concurrency=2))
    admin = await tokens.create_token(pool, schema, "ops", "admin")
    app = build_api(registry, pool, schema)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, registry, pool, schema, {"Authorization": f"Bearer {admin}"}, engine)
    await drop_schema(pool, schema)
    await pool.close()


async def granted(api: Api, subject: str, *, daily_cap: int | None = None, image: bytes | None = None) -> None:
    await api.registry.create_subject(subject, "Ada", actor="test")
    await api.registry.enrol(subject, image or portrait_png(3), actor="test")
    await api.registry.grant(subject, document=b"signed", scope=Scope(("tiktok",), (), (), True), valid_from=None,
                             valid_until=None, daily_cap=daily_cap, actor="test")


def check_body(subject: str, **extra: Any) -> dict[str, Any]:
    return {"subject": subject, "purpose": "swap", "platform": "tiktok", "commercial": True, **extra}


def big_png(width: int, height: int) -> bytes:
    """A canvas this big that compresses to little: a flat picture."""
    ok, encoded = cv2.imencode(".png", np.full((height, width, 3), 128, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return encoded.tobytes()


# -- B: a job's use is counted once ----------------------------------------------------------------


async def test_a_redelivered_job_spends_one_use_of_the_daily_cap(api: Api) -> None:
    await granted(api, "cap-subject", daily_cap=2)

    async def consume(job_id: str) -> dict[str, Any]:
        r = await api.client.post("/check", headers=api.admin, json=check_body("cap-subject", consume=True, job_id=job_id))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def uses() -> int:
        return int(await api.pool.fetchval(f'SELECT coalesce(sum(uses), 0) FROM "{api.schema}".usage') or 0)

    for _ in range(3):  # the first delivery and two redeliveries after crashes
        assert (await consume("job-1"))["allowed"]
    assert await uses() == 1
    assert (await consume("job-2"))["allowed"]
    assert await uses() == 2
    denied = await consume("job-3")
    assert not denied["allowed"] and denied["reason"] == "daily_cap_reached"
    again = await consume("job-1")  # counted already: it keeps its place under the cap
    assert again["allowed"] and await uses() == 2


async def test_the_last_slot_of_the_cap_is_not_denied_to_the_job_that_took_it(api: Api) -> None:
    """The swapper's consuming check takes the last use of the day for job J; the post-producer's
    later non-consuming re-check of J is not turned away by J's own use. Another job is."""
    await granted(api, "last-slot", daily_cap=1)

    async def ask(**extra: Any) -> dict[str, Any]:
        r = await api.client.post("/check", headers=api.admin, json=check_body("last-slot", **extra))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert (await ask(consume=True, job_id="job-J"))["allowed"]
    recheck = await ask(consume=False, job_id="job-J")
    assert recheck["allowed"], recheck
    assert (await ask(job_id="job-J", purpose="render"))["allowed"]  # any stage of the same job
    other = await ask(consume=False, job_id="job-K")
    assert not other["allowed"] and other["reason"] == "daily_cap_reached", other
    # no job id: does one more use fit? no
    assert (await ask())["reason"] == "daily_cap_reached"
    assert int(await api.pool.fetchval(f'SELECT coalesce(sum(uses), 0) FROM "{api.schema}".usage') or 0) == 1


async def test_a_consuming_check_needs_a_job_id(api: Api) -> None:
    """Without a job id a redelivery would spend the cap twice: refused, naming the field."""
    await granted(api, "needs-job", daily_cap=5)
    r = await api.client.post("/check", headers=api.admin, json=check_body("needs-job", consume=True))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["errors"][0]["loc"] == ["body", "job_id"] and "job_id" in body["detail"], body
    r = await api.client.post("/check", headers=api.admin, json=check_body("needs-job", consume=True, job_id=None))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "job_id"], r.text
    assert await api.pool.fetchval(f'SELECT coalesce(sum(uses), 0) FROM "{api.schema}".usage') == 0
    # the registry itself refuses it too (the CLI and in-process callers)
    from reelfab_consent_registry.errors import Refused

    with pytest.raises(Refused, match="job_id"):
        await api.registry.check(ConsentRequest("needs-job", "swap", "tiktok", api.registry.clock()), consume=True)
    r = await api.client.post("/check", headers=api.admin, json=check_body("needs-job", consume=True, job_id="job-1"))
    assert r.status_code == 200 and r.json()["allowed"]


@pytest.mark.parametrize("job_id", ["../etc", "a b", ".hidden", "x" * 129, "", "job/1"])
async def test_job_id_must_be_an_identifier(api: Api, job_id: str) -> None:
    r = await api.client.post("/check", headers=api.admin, json=check_body("nobody", consume=True, job_id=job_id))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "job_id"], r.text


def test_the_client_sends_the_job_id_and_refuses_a_bad_one() -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"allowed": True, "reason": "ok", "detail": "", "consent_version": 1})

    client = RegistryClient("http://registry", "token", transport=httpx.MockTransport(answer))
    from datetime import UTC, datetime

    request = ConsentRequest("ada", "swap", "tiktok", datetime.now(UTC))
    assert client.check(request, consume=True, job_id="job-7").allowed
    assert sent[-1]["job_id"] == "job-7" and sent[-1]["consume"] is True
    client.check(request)
    assert "job_id" not in sent[-1]
    with pytest.raises(PermanentError, match="job_id"):
        client.check(request, consume=True, job_id="../x")


# -- C: image size, reduced decoding, bounded face work --------------------------------------------


async def test_a_face_image_over_the_pixel_limit_is_refused_from_its_header(api: Api) -> None:
    png = big_png(7000, 7000)
    assert len(png) < 200_000  # small file, huge canvas
    r = await api.client.post("/check", headers=api.admin,
                              json=check_body("nobody", image_base64=base64.b64encode(png).decode()))
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "7000x7000 pixels (49,000,000)" in detail and "16,000,000-pixel limit" in detail
    await api.registry.create_subject("big", "Big", actor="test")
    r = await api.client.post("/subjects/big/images", headers=api.admin, files={"image": ("big.png", png, "image/png")})
    assert r.status_code == 413 and "16,000,000-pixel limit" in r.json()["detail"]
    assert api.engine.shapes == []  # nothing was decoded


async def test_large_images_are_decoded_reduced(api: Api) -> None:
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(140, 40, (3000, 3000, 3)), 0, 255).astype(np.uint8)  # 9 MP: over 4 MP of work
    ok, jpeg = cv2.imencode(".jpg", image)
    r = await api.client.post("/check", headers=api.admin,
                              json=check_body("nobody", image_base64=base64.b64encode(jpeg.tobytes()).decode()))
    assert r.status_code == 200, r.text
    assert api.engine.shapes[-1][:2] == (1500, 1500)


async def test_face_work_runs_at_most_face_concurrency_at_a_time(api: Api) -> None:
    images = [base64.b64encode(portrait_png(100 + i)).decode() for i in range(6)]
    answers = await asyncio.gather(*(
        api.client.post("/check", headers=api.admin, json=check_body("nobody", image_base64=b)) for b in images
    ))
    assert all(a.status_code == 200 for a in answers)
    assert len(api.engine.shapes) == 6
    assert api.engine.peak == 2  # six at once, two at a time


# -- D: strict input, 405 with Allow, documented answers -------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/check", check_body("s", consume=0), "consume"),
        ("POST", "/check", check_body("s", consume="true"), "consume"),
        ("POST", "/check", {**check_body("s"), "commercial": 1}, "commercial"),
        ("POST", "/check", check_body("s", at=0), "at"),
        ("POST", "/check", check_body("s", at="0"), "at"),
        ("PATCH", "/subjects/s/consents", {"valid_until": 0}, "valid_until"),
        ("PATCH", "/subjects/s/consents", {"valid_until": "1700000000"}, "valid_until"),
        ("PATCH", "/subjects/s/consents", {"commercial_use": 0}, "commercial_use"),
        ("PATCH", "/subjects/s/consents", {"daily_cap": True}, "daily_cap"),
    ],
)
async def test_loose_json_types_are_refused(api: Api, method: str, path: str, body: Any, field: str) -> None:
    r = await api.client.request(method, path, headers=api.admin, json=body)
    assert r.status_code == 422, r.text
    assert ["body", field] == r.json()["errors"][0]["loc"][:2]


async def test_undeclared_methods_are_405_with_an_allow_header(api: Api) -> None:
    for method, path, allow in [
        ("OPTIONS", "/subjects", "GET, HEAD, POST"),
        ("OPTIONS", "/check", "POST"),
        ("DELETE", "/subjects/ada", "GET, HEAD"),
        ("PUT", "/subjects/ada/consents", "POST, PATCH"),
        ("OPTIONS", "/audit/checkpoint", "GET, HEAD, POST"),
    ]:
        for headers in (api.admin, {}):
            r = await api.client.request(method, path, headers=headers)
            assert r.status_code == 405, (method, path, r.text)
            assert r.headers["allow"] == allow and r.json()["error"] == "MethodNotAllowed"
    assert (await api.client.request("OPTIONS", "/nowhere", headers=api.admin)).status_code == 404


async def test_an_id_with_a_newline_gets_the_json_error_body(api: Api) -> None:
    for path in ("/subjects/a%0Ab", "/subjects/a%0A", "/subjects/%0A/lease", "/subjects/a%0Ab/erase"):
        method = "POST" if path.endswith("erase") else "GET"
        r = await api.client.request(method, path, headers=api.admin)
        assert r.status_code in (404, 422) and r.headers["content-type"] == "application/json", (path, r.text)
        assert set(r.json()) >= {"error", "detail"}


async def test_every_operation_documents_401_413_and_422(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert {"401", "413", "422"} <= set(op["responses"]), (method, path)
    assert "410" in doc["paths"]["/subjects/{subject_id}/erase"]["post"]["responses"]


async def test_the_served_app_answers_an_id_with_a_newline_in_json(api: Api) -> None:
    from types import SimpleNamespace

    from reelfab.bus.outage import Outages
    from reelfab.service import http_app

    async def ready() -> bool:
        return True

    served = http_app(SimpleNamespace(spec=SimpleNamespace(name="consent-registry"),  # type: ignore[arg-type]
                                      bus=SimpleNamespace(policy=SimpleNamespace(outages=Outages("consent-registry"))),
                                      extras={"api": build_api(api.registry, api.pool, api.schema)}), ready)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://test") as client:
        r = await client.get("/subjects/a%0Ab", headers=api.admin)
    assert r.headers["content-type"] == "application/json", r.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://test") as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"  # the service's own routes still answer
        assert (await client.get("/readyz")).status_code == 200
