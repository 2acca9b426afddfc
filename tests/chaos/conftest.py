"""Fixtures of the chaos suite: one isolated stack for the scenarios (its own Kafka, PostgreSQL, state
dir and service processes), the quick/full variants, and the scenario table printed at the end.

`pytest` (and `make test`) runs the quick variant; `make chaos` runs the full one (`-m chaos_full`).
REELFAB_CHAOS_KEEP=1 keeps the temp folder (logs, state) after the run; REELFAB_CHAOS_REPORT=FILE
appends the table to FILE as Markdown; REELFAB_CHAOS_SEED fixes the revocation moments."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from tests.chaos.harness import ChaosStack
from tests.chaos.ledger import REQUESTED, Ledger, Row, Submitted


@dataclass(frozen=True)
class Variant:
    name: str
    jobs: int  # good jobs per fault scenario
    outage_s: float  # PostgreSQL / the registry's API down this long
    revoke_jobs: int  # in-flight jobs across the revoked subjects
    revoke_subjects: int
    settle_s: float  # after the fault: how long jobs may take to reach a terminal event


QUICK = Variant("quick", jobs=2, outage_s=10, revoke_jobs=4, revoke_subjects=2, settle_s=90)
FULL = Variant("full", jobs=8, outage_s=30, revoke_jobs=20, revoke_subjects=4, settle_s=240)

ROWS: list[Row] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", [
            pytest.param(QUICK, id="quick", marks=pytest.mark.chaos_quick),
            pytest.param(FULL, id="full", marks=pytest.mark.chaos_full),
        ])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full variant runs only when asked for by marker (`-m chaos_full`, as `make chaos` does)."""
    if "chaos_full" in (config.getoption("markexpr") or ""):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("chaos_full") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    table = markdown_table(ROWS)
    terminalreporter.write_sep("-", "chaos scenarios (counted from the topics)")
    terminalreporter.write_line(table)
    report = os.environ.get("REELFAB_CHAOS_REPORT")
    if report:
        with Path(report).open("a") as out:
            out.write(table + "\n")


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(Row.HEADER) + " | notes |", "|" + "---|" * (len(Row.HEADER) + 1)]
    lines += ["| " + " | ".join(r.cells()) + f" | {r.notes} |" for r in rows]
    return "\n".join(lines)


# --- the world a scenario runs in --------------------------------------------------------------------------


class World:
    """The running stack plus the inputs every scenario uses: a consented subject, its enrolled face
    in the store, a short template clip, a faceless clip, and a driver bus to publish and scan."""

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.root = stack.root
        self.bus: Any = None
        self.store: Any = None
        self.faces: dict[str, Any] = {}  # subject -> StoredObject of its enrolled image
        self.template: Any = None
        self.faceless: Any = None
        self.template_file: Path = Path()
        self.subject = ""

    async def start(self) -> None:
        from reelfab.bus.kafka import KafkaBus
        from reelfab.contracts.codec import default_codec
        from reelfab.devtools.synthetic import template_clip
        from reelfab.storage import open_store

        assets = self.root / "assets"
        # the smallest template the swapper's quality gate accepts (reelfab.faces.qc.TemplateRules:
        # 5 s, short side 540 px), so a job takes seconds
        clip = template_clip(assets / "template.mp4", seed=7, seconds=5.0, size=(540, 960), performer_seed=32)
        self.template_file = clip.path
        faceless = assets / "faceless.mp4"
        _faceless_clip(faceless)
        await self.stack.start_services()
        self.store = open_store(self.settings.storage_root)
        self.template = self.store.put_file("inputs/template.mp4", clip.path)
        self.faceless = self.store.put_file("inputs/faceless.mp4", faceless)
        self.bus = KafkaBus(self.settings, "chaos-driver", default_codec(self.settings))
        await self.bus.start()
        self.subject = await self.enrol("vera", 31)
        await self.warm_up()

    async def stop(self) -> None:
        if self.bus is not None:
            await self.bus.stop()

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.stack.service("consent-registry").url,
                                 headers={"Authorization": f"Bearer {self.stack.admin_token}"}, timeout=120)

    async def enrol(self, name: str, person_seed: int) -> str:
        """A new subject with a generated face, enrolled and granted consent for tiktok/dance."""
        from reelfab.devtools.synthetic import virtual_person

        subject = f"{name}-{uuid.uuid4().hex[:8]}"
        png = cv2.imencode(".png", virtual_person(person_seed))[1].tobytes()
        async with self.api() as api:
            r = await api.post("/subjects", json={"subject_id": subject, "display_name": f"Virtual {name}"})
            assert r.status_code == 201, r.text
            r = await api.post(f"/subjects/{subject}/images", files={"image": ("face.png", png, "image/png")})
            assert r.status_code == 201, r.text
            r = await api.post(f"/subjects/{subject}/consents",
                               files={"document": ("consent.pdf", b"%PDF signed", "application/pdf")},
                               data={"platforms": "tiktok", "allowed_tags": "dance", "commercial_use": "false"})
            assert r.status_code == 201, r.text
        self.faces[subject] = self.store.put_bytes(f"inputs/{subject}/face.png", png)
        await self._granted_on_topic(subject)
        return subject

    async def _granted_on_topic(self, subject: str, timeout: float = 30.0) -> None:
        """The workers judge consent on their local view of the consent topic: give them the lease
        first (on the topic, then a moment for their consumers), or a job meets consent.no_consent."""
        import asyncio
        import time

        from tests.chaos.ledger import CONSENT

        since = datetime.now(UTC) - timedelta(seconds=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in await self.bus.scan(CONSENT, since):
                if m.key == subject.encode() and self.bus.codec.decode(m.value).value["change"] == "GRANTED":
                    await asyncio.sleep(1.0)
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the consent of {subject} never reached {CONSENT}")

    async def warm_up(self, timeout: float = 120.0) -> None:
        """Before any fault: the swapper consumes and its consent view knows the subject. A faceless
        template proves both in a couple of seconds (consent passes, the template gate refuses it),
        without paying for a swap and a render."""
        ledger = Ledger(self.bus, datetime.now(UTC) - timedelta(seconds=2))
        await self.submit(ledger, label="warm-up", template_uri=self.faceless.uri,
                          template_sha256=self.faceless.sha256)
        seen = await ledger.settle(timeout)
        outcome = next(iter(seen.values()))
        if not outcome.terminal or any(f["reason_code"].startswith("consent.") for f in outcome.failed):
            from tests.chaos.ledger import describe

            raise AssertionError("the warm-up job did not get past consent on the chaos stack:\n" + describe(seen)
                                 + "\n" + self.stack.logs("swapper-gpu") + "\n" + self.stack.logs("post-producer"))

    async def revoke(self, subject: str) -> None:
        async with self.api() as api:
            r = await api.post(f"/subjects/{subject}/revoke", json={"reason": "chaos: changed my mind"})
            assert r.status_code == 200, r.text

    def job_record(self, *, subject: str | None = None, label: str = "job", **overrides: Any) -> dict[str, Any]:
        subject = subject or self.subject
        face = self.faces.get(subject) or self.faces[self.subject]
        record: dict[str, Any] = {
            "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "chaos",
            "job_id": f"chaos-{label}-{uuid.uuid4().hex[:10]}", "subject_id": subject, "consent_version": 1,
            "source_image_uri": face.uri, "source_image_sha256": face.sha256,
            "template_id": "dance-1", "template_uri": self.template.uri, "template_sha256": self.template.sha256,
            "template_tags": ["dance"], "swapper_model": "classical", "platform": "tiktok", "commercial": False,
            "music_uri": None, "caption_text": "Chaos dance, consented",
        }
        record.update(overrides)
        return record

    async def submit(self, ledger: Ledger, *, good: bool = True, label: str = "job", **overrides: Any) -> Submitted:
        record = self.job_record(label=label, **overrides)
        await self.bus.publish(REQUESTED, record)
        return ledger.add(Submitted(record["job_id"], record["event_id"], record["subject_id"], good, label))

    async def ensure_running(self) -> None:
        """Between scenarios: the stack and every service up again, whatever the last one left."""
        import asyncio

        from reelfab.devtools.localstack import kafka_status, postgres_status

        if not postgres_status(self.settings)["running"]:
            await asyncio.to_thread(self.stack.start_postgres)
        if not kafka_status(self.settings)["running"]:
            await asyncio.to_thread(self.stack.start_kafka)
        for name in ("consent-registry", "swapper-gpu", "post-producer"):
            svc = self.stack.service(name)
            if svc.proc is None or svc.proc.poll() is not None:
                svc.reap_leftovers()
                await self.stack.restart(name)


def _faceless_clip(path: Path) -> None:
    """5 s of a moving test pattern with a tone: passes every template rule but the face."""
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=540x960:rate=25:duration=5",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=5:sample_rate=48000",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")  # torn down after the last scenario, not at the end of `make test`
async def world() -> AsyncIterator[World]:
    stack = ChaosStack()
    ok = False
    w = World(stack)
    try:
        stack.up()
        await w.start()
        ok = True
        yield w
    finally:
        await w.stop()
        keep = os.environ.get("REELFAB_CHAOS_KEEP") == "1" or not ok
        stack.close(keep=keep)
        if keep:
            print(f"\nchaos: kept {stack.root} (logs/, state/)")


@pytest.fixture
async def scene(world: World) -> World:
    await world.ensure_running()
    return world
