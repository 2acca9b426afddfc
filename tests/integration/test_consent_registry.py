"""The consent registry on real PostgreSQL and Kafka, with the classical face engine and generated
people (no real person): leases, revocation reaching another process, scope, enrolment identity
checks, the audit chain, erasure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.bus.outbox import OutboxRelay
from reelfab.consent.decision import ConsentRequest
from reelfab.consent.lease import Scope, public_key_text
from reelfab.contracts.codec import default_codec
from reelfab.devtools.synthetic import virtual_person
from reelfab_consent_registry import audit, keys
from reelfab_consent_registry.config import RegistryConfig
from reelfab_consent_registry.crypto import ErasedError
from reelfab_consent_registry.errors import Conflict, Refused
from tests.conftest import eventually, unique
from tests.integration.consent_api_support import make_registry, make_schema, pg

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]
NOW = datetime.now(UTC)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def people() -> dict[str, bytes]:
    return {
        "ana": png(virtual_person(11)),
        "ana-talking": png(virtual_person(11, expression="talk:0.2")),
        "ben": png(virtual_person(12)),
    }


@pytest.fixture(scope="module")
def engine() -> Any:
    from reelfab.faces.classical import ClassicalEngine

    return ClassicalEngine()


@pytest.fixture
async def registry(pg_pool: Any, stack: Any, tmp_path: Path, engine: Any) -> Any:
    schema = unique("consent")
    await make_schema(pg_pool, schema)
    bus = KafkaBus(stack, "consent-registry", default_codec())
    reg = make_registry(pg_pool, schema, stack, tmp_path, engine=engine, bus=bus,
                        config=RegistryConfig(asset_kind="synthetic"))
    await bus.start()
    yield reg
    await bus.stop()


async def publish(reg: Any) -> None:
    relay = OutboxRelay(pg(reg).pool, pg(reg).schema, reg.trail.bus)
    while await relay.relay_once():
        pass


async def enrolled_and_granted(reg: Any, people: dict[str, bytes], subject: str, **grant: Any) -> Any:
    await reg.create_subject(subject, "Ana Virtual", "test")
    await reg.enrol(subject, people["ana"], "test")
    options: dict[str, Any] = {
        "scope": Scope(("tiktok",), ("dance",), (), True),
        "valid_from": None,
        "valid_until": NOW + timedelta(days=30),
        "daily_cap": 100,
    }
    options.update(grant)
    return await reg.grant(subject, document=b"signed consent form", actor="test", **options)


def req(subject: str, **kw: Any) -> ConsentRequest:
    base: dict[str, Any] = dict(
        subject=subject,
        purpose="swap",
        platform="tiktok",
        at=datetime.now(UTC),
        template_tags=("dance",),
        commercial=True,
    )
    base.update(kw)
    return ConsentRequest(**base)


VIEW = r"""
import asyncio, json, sys, time
from datetime import UTC, datetime
from reelfab.bus.kafka import KafkaBus
from reelfab.contracts.codec import default_codec
from reelfab.consent.decision import ConsentRequest
from reelfab.consent.gate import load_public_keys
from reelfab.consent.view import ConsentView
from tests.conftest import make_settings

async def main(subject):
    from reelfab.logging import configure_logging
    configure_logging("json")  # logs to stderr; stdout carries only the view's reports
    settings = make_settings()
    view = ConsentView(load_public_keys(settings), service="viewer")
    bus = KafkaBus(settings, "viewer", default_codec())
    original = view.apply
    def apply(record):
        applied = original(record)
        if applied.subject == subject:
            d = view.check(ConsentRequest(subject, "swap", "tiktok", datetime.now(UTC), ("dance",)))
            # (the view is a sync apply here: keys come from settings, no loader to ask)
            print(json.dumps({"t": time.time(), "outcome": applied.outcome, "detail": applied.detail,
                              "allowed": d.allowed, "reason": d.reason}), flush=True)
        return applied
    view.apply = apply
    view.subscribe(bus)
    await bus.start()
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.sleep(120)

asyncio.run(main(sys.argv[1]))
"""


class Viewer:
    """Another process following the consent topic with its own local view."""

    def __init__(self, subject: str, public_keys: str) -> None:
        env = {**os.environ, "REELFAB_CONSENT_PUBLIC_KEYS": public_keys}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", VIEW, subject],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=os.getcwd(),
        )
        self.lines: list[dict[str, Any]] = []
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]

    def poll(self) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            self.lines.append(json.loads(line))
        return self.lines

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def test_a_lease_verifies_in_another_process_and_a_revocation_reaches_it_within_a_second(
    registry: Any, people: dict[str, bytes]
) -> None:
    subject = unique("ana")
    await enrolled_and_granted(registry, people, subject)
    public = ",".join(
        f"{k}={public_key_text(v)}"
        for k, v in (await keys.public_keys(pg(registry).pool, pg(registry).schema)).items()
    )
    viewer = Viewer(subject, public)
    try:
        await publish(registry)
        await eventually(lambda: any(line.get("allowed") for line in viewer.poll()), timeout=60)
        granted = next(line for line in viewer.lines if line.get("allowed"))
        assert granted["outcome"] == "applied" and granted["detail"] == "GRANTED v1"

        await registry.revoke(subject, actor="test", reason="changed my mind")
        await publish(registry)
        published_at = time.time()
        await eventually(lambda: any(line.get("reason") == "revoked" for line in viewer.poll()), timeout=10)
        revoked = next(line for line in viewer.lines if line.get("reason") == "revoked")
        assert revoked["t"] - published_at < 1.0, (
            f"the view applied the revocation after {revoked['t'] - published_at:.2f} s"
        )

        # a tampered lease (v3 claiming GRANTED, with v2's signature) is refused; the view stays revoked
        lease = await registry.latest_lease(subject)
        forged = lease.payload.replace(b'"REVOKED"', b'"GRANTED"').replace(
            b'"consent_version":2', b'"consent_version":3'
        )
        record = json.loads(forged)
        assert record["status"] == "GRANTED"
        await registry.trail.bus.publish(
            "reelfab.consent.changed.v1",
            {
                "event_id": unique("forged"),
                "occurred_at": datetime.now(UTC),
                "producer": "mallory",
                "subject_id": subject,
                "change": "GRANTED",
                "consent_version": 3,
                "display_name": "x",
                "document_sha256": "x",
                "scope": {
                    "platforms": ["tiktok"],
                    "allowed_tags": [],
                    "territories": [],
                    "commercial_use": True,
                },
                "valid_from": datetime.now(UTC),
                "embedding_digest": "x",
                "lease": {"payload": forged, "signature": lease.signature, "key_id": lease.key_id},
            },
        )
        await eventually(lambda: any(line.get("outcome") == "invalid" for line in viewer.poll()), timeout=10)
        assert viewer.lines[-1]["reason"] == "invalid_lease" and not viewer.lines[-1]["allowed"]  # fails closed
    finally:
        viewer.close()


async def test_scope_validity_and_images_are_checked(registry: Any, people: dict[str, bytes]) -> None:
    subject = unique("ana")
    await enrolled_and_granted(registry, people, subject)
    assert (await registry.check(req(subject), image_bytes=people["ana"])).allowed
    assert (await registry.check(req(subject, at=datetime.now(UTC) + timedelta(days=31)))).reason == "expired"
    assert (await registry.check(req(subject, platform="youtube"))).reason == "out_of_scope_platform"
    assert (await registry.check(req(subject, template_tags=("dance", "prank")))).reason == "out_of_scope_tag"
    # a re-encoded copy (JPEG) is the same image; a crop-and-rotate beyond the perceptual threshold is not
    image = cv2.imdecode(np.frombuffer(people["ana"], np.uint8), cv2.IMREAD_COLOR)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    assert (await registry.check(req(subject), image_bytes=jpeg)).allowed
    altered = cv2.warpAffine(
        image[100:900, 150:950], cv2.getRotationMatrix2D((400, 400), 25, 1.2), (800, 800)
    )
    denied = await registry.check(req(subject), image_bytes=png(altered))
    assert denied.reason == "image_not_enrolled", denied
    assert (await registry.check(req(subject), image_bytes=people["ben"])).reason == "image_not_enrolled"


async def test_daily_cap_counts_uses(registry: Any, people: dict[str, bytes]) -> None:
    subject = unique("ana")
    await enrolled_and_granted(registry, people, subject, daily_cap=2)
    for n in range(2):
        assert (await registry.check(req(subject), consume=True, job_id=f"job-{n}")).allowed
    assert (await registry.check(req(subject), consume=True, job_id="job-2")).reason == "daily_cap_reached"


async def test_enrolment_refuses_another_person_and_a_person_enrolled_elsewhere(
    registry: Any, people: dict[str, bytes]
) -> None:
    first, second = unique("ana"), unique("other")
    await registry.create_subject(first, "Ana Virtual", "test")
    await registry.enrol(first, people["ana"], "test")
    with pytest.raises(Refused, match="does not match"):
        await registry.enrol(first, people["ben"], "test")
    await registry.enrol(first, people["ana-talking"], "test")  # the same person, talking: accepted
    await registry.create_subject(second, "Someone", "test")
    with pytest.raises(Refused, match=f"matches another enrolled subject \\({first}"):
        await registry.enrol(second, people["ana-talking"], "test")
    with pytest.raises(Refused, match="not an image"):
        await registry.enrol(second, b"%PDF-1.4 not an image", "test")
    with pytest.raises(Refused, match="no_face|no face"):
        await registry.enrol(second, png(np.full((800, 800, 3), 128, np.uint8)), "test")


async def test_the_audit_chain_verifies_and_an_edited_row_is_named(
    registry: Any, people: dict[str, bytes]
) -> None:
    subject = unique("ana")
    await enrolled_and_granted(registry, people, subject)
    await registry.check(req(subject, platform="youtube"))  # a denial is audited too
    result = await audit.verify(pg(registry).pool, pg(registry).schema)
    assert result.ok and result.entries >= 4
    rows = await pg(registry).pool.fetch(f'SELECT seq, action FROM "{pg(registry).schema}".audit_log ORDER BY seq')
    assert [r["action"] for r in rows][:4] == [
        "subject.created",
        "image.enrolled",
        "consent.granted",
        "consent.denied",
    ]
    target = rows[2]["seq"]
    await pg(registry).pool.execute(
        f"""UPDATE "{pg(registry).schema}".audit_log SET details = jsonb_set(details, '{{version}}', '7') WHERE seq = $1""",
        target,
    )
    broken = await audit.verify(pg(registry).pool, pg(registry).schema)
    assert not broken.ok and broken.first_broken == target and "edited" in broken.problem


async def test_erasure_makes_biometrics_unreadable_and_keeps_the_audit(
    registry: Any, people: dict[str, bytes]
) -> None:
    subject = unique("ana")
    await enrolled_and_granted(registry, people, subject)
    sha = (await registry.get_subject(subject))["images"][0]["sha256"]
    assert await registry.read_image(subject, sha) == people["ana"]
    with pytest.raises(Conflict, match="revoke"):
        await registry.erase(subject, actor="test")
    await registry.revoke(subject, actor="test", reason="erasure request")
    report = await registry.erase(subject, actor="test")
    assert len(report["unreadable_images"]) == 1 and report["unreadable_embeddings"] == 1
    with pytest.raises(ErasedError, match="can no longer be decrypted"):
        await registry.read_image(subject, sha)
    sealed = registry.objects.get_bytes(report["unreadable_images"][0])
    assert people["ana"][:64] not in sealed  # what stays on disk is ciphertext
    assert (await registry.check(req(subject))).reason == "erased"
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok
    with pytest.raises(Conflict):
        await registry.revoke(subject, actor="test", reason="again")
