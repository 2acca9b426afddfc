"""The planner as a running service on the real Kafka and PostgreSQL: a trend becomes expedited swap
jobs within 5 s; a flag disables a subject for the next plan at once; the ledger shows a job's whole
path from the stage events on the topics. Consent comes as signed leases on the consent topic (the key
given to the planner as REELFAB_CONSENT_PUBLIC_KEYS); the catalogue is written to the planner's schema.

Every name is unique to the run (schema, consumer group, subjects, tags), so events other tests left on
the shared topics plan nothing here."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import LeaseTerms, public_key_text, sign
from reelfab.contracts.codec import default_codec
from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab.service import run_service
from reelfab_consent_registry.domain import consent_event
from reelfab_planner import main as planner_main
from reelfab_planner.catalogue_store import PostgresCatalogueStore
from reelfab_planner.repository import PostgresPlannerStore
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID
from tests.unit.services.planner_samples import template, terms

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
EXPEDITED, REQUESTED = "reelfab.swap.expedited.v1", "reelfab.swap.requested.v1"


@pytest.fixture
async def planner(stack: Any) -> AsyncIterator[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    schema, tag = unique("planner"), f"dance{run}"
    settings = make_settings(consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}", planner_max_share=1.0,
                             log_format="json", http_port=0)
    pool = await create_pool(settings)
    await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_planner"))
    catalogue = PostgresCatalogueStore(pool, schema)
    for name in ("a", "b", "c"):
        await catalogue.add_template(dataclasses.replace(template(f"t{name}-{run}", tag), sha256=f"{name}{run}".ljust(64, "0")))
    bus = KafkaBus(settings, "test-driver", default_codec())
    await bus.start()
    subjects = [f"ana-{run}", f"ben-{run}"]
    for subject in subjects:
        await bus.publish("reelfab.consent.changed.v1", consent_record(terms(subject, tags=(tag,))))
    spec = dataclasses.replace(planner_main.SPEC, name=f"planner-{run}", db_schema=schema)  # a consumer group of its own
    from reelfab.devtools.embedded import free_port

    stop, port = asyncio.Event(), free_port()
    task = asyncio.create_task(run_service(spec, settings.model_copy(update={"http_port": port}), planner_main.wire, stop))
    store = PostgresPlannerStore(pool, schema)
    try:
        await asyncio.sleep(0)
        yield {"bus": bus, "tag": tag, "subjects": subjects, "store": store, "task": task, "run": run, "port": port}
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await bus.stop()
        await pool.close()


def consent_record(t: LeaseTerms) -> Any:
    now = datetime.now(UTC)
    t = dataclasses.replace(t, valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30), issued_at=now)
    return consent_event(t, sign(t, KEY), t.subject, event_id=str(uuid.uuid4()), reason=None, takedown=(), document_uri=None)


def trend(run: str, tags: list[str], **kw: Any) -> dict[str, Any]:
    values = {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "detector",
              "trend_id": f"tr-{uuid.uuid4().hex[:8]}", "source": "test", "title": "a dance", "tags": tags,
              "urgency": 0.9, "deadline": datetime.now(UTC) + timedelta(hours=1), "max_jobs": 4}
    values.update(kw)
    return values


async def jobs_of(bus: KafkaBus, topic: str, trend_id: str, since: datetime) -> list[dict[str, Any]]:
    codec = default_codec()
    values = [codec.decode(m.value).value for m in await bus.scan(topic, since)]
    return [v for v in values if v.get("trend_id") == trend_id]


async def until_serving(task: asyncio.Task[None], port: int) -> None:
    """A service run in-process is ready as an operator sees it: /readyz answers 200 (every consumer has
    joined its group, so no rebalance stops the consumers any more; while they are still joining, each
    join pauses the others for seconds)."""

    async def serving() -> bool:
        assert not task.done(), task.result()
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(serving, timeout=90, interval=0.2)


async def until_ready(store: PostgresPlannerStore, f: dict[str, Any], bus: KafkaBus) -> None:
    """The planner is ready (/readyz) and consuming: a probe trend (matching nothing) is recorded as
    planned-nothing."""
    await until_serving(f["task"], f["port"])
    probe = trend(f["run"], [f"nothing-{f['run']}"])
    await bus.publish("reelfab.trend.detected.v1", probe)

    async def recorded() -> bool:
        assert not f["task"].done(), f["task"].result()
        return bool(await store.pool.fetchval(f'SELECT 1 FROM "{store.schema}".processed_events WHERE event_id = $1',
                                              probe["event_id"]))

    await eventually(recorded, timeout=90, interval=0.2)


async def test_a_trend_becomes_expedited_jobs_within_5_seconds(planner: dict[str, Any]) -> None:
    bus, store = planner["bus"], planner["store"]
    await until_ready(store, planner, bus)
    since = datetime.now(UTC) - timedelta(seconds=5)
    value = trend(planner["run"], [planner["tag"].upper()])
    started = time.monotonic()
    await bus.publish("reelfab.trend.detected.v1", value)
    found: list[dict[str, Any]] = []

    async def planned() -> bool:
        found[:] = await jobs_of(bus, EXPEDITED, value["trend_id"], since)
        return len(found) == 4

    await eventually(planned, timeout=5.0, interval=0.1)
    print(f"\ntrend -> {len(found)} expedited jobs on the topic in {time.monotonic() - started:.2f} s")
    assert all(j["priority"] == 10 and abs(j["deadline"] - value["deadline"]) < timedelta(milliseconds=1) for j in found)
    assert {j["subject_id"] for j in found} <= set(planner["subjects"])
    assert await jobs_of(bus, REQUESTED, value["trend_id"], since) == []  # nothing on the normal lane


async def test_a_flag_disables_a_subject_for_the_next_plan_and_the_ledger_shows_a_jobs_path(planner: dict[str, Any]) -> None:
    bus, store = planner["bus"], planner["store"]
    ana, ben = planner["subjects"]
    await until_ready(store, planner, bus)
    await bus.publish("reelfab.subject.flagged.v1", {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "analytics", "subject_id": ana,
        "subject_kind": "FACE", "action": "DISABLED", "reason": "3 moderation strikes in 7 days"})
    await eventually(lambda: _disabled(store, ana), timeout=20)
    since = datetime.now(UTC) - timedelta(seconds=5)
    value = trend(planner["run"], [planner["tag"]], max_jobs=6)
    await bus.publish("reelfab.trend.detected.v1", value)
    found: list[dict[str, Any]] = []

    async def planned() -> bool:
        found[:] = await jobs_of(bus, EXPEDITED, value["trend_id"], since)
        return len(found) >= 3

    await eventually(planned, timeout=20)
    assert {j["subject_id"] for j in found} == {ben}  # ana is flagged: ben x 3 templates, no more

    job = found[0]
    common = {"occurred_at": datetime.now(UTC), "producer": "test", "job_id": job["job_id"], "subject_id": ben,
              "consent_version": 1, "template_id": job["template_id"], "arm_id": job["arm_id"]}
    await bus.publish("reelfab.swap.completed.v1", {**common, "event_id": str(uuid.uuid4()),
        "mezzanine_uri": "file:///m.mp4", "mezzanine_sha256": "a" * 64, "face_track_uri": "file:///t.json",
        "face_track_sha256": "b" * 64, "backend": "classical", "swapper_model": "classical", "model_license": "x",
        "commercial_use_allowed": False, "frames": 10, "fps": 25.0, "duration_s": 0.4, "platform": "tiktok",
        "source_image_sha256": "d" * 64})  # fmt: skip
    await bus.publish("reelfab.render.completed.v1", {**common, "event_id": str(uuid.uuid4()),
        "final_uri": "file:///f.mp4", "final_sha256": "c" * 64, "spec_check": {"passed": True, "width": 1080,
        "height": 1920, "video_codec": "h264", "video_profile": "High", "pix_fmt": "yuv420p", "fps": 25.0, "audio_codec": "aac",
        "sample_rate": 44100, "duration_s": 0.4, "problems": []}, "c2pa_manifest_label": "urn:c2pa:x", "title": "t",
        "hashtags": [], "platform": "tiktok", "is_aigc": True})  # fmt: skip
    await bus.publish("reelfab.publish.completed.v1", {**common, "event_id": str(uuid.uuid4()), "platform": "tiktok",
        "post_id": f"p-{planner['run']}", "account": "acc", "published_at": datetime.now(UTC),
        "privacy_level": "SELF_ONLY", "dry_run": True})  # fmt: skip

    async def published() -> bool:
        row = await store.job(job["job_id"])
        return row is not None and row.status == "published" and len(row.steps) == 4

    await eventually(published, timeout=20)
    row = await store.job(job["job_id"])
    assert row is not None
    # each stage's topic has its own consumer, so the steps may be recorded in any order; the status
    # only moves forward (published is final whatever arrives after it)
    assert row.steps[0].status == "requested"
    assert sorted(s.status for s in row.steps[1:]) == ["published", "rendered", "swapped"]
    assert row.origin == "trend" and row.trend_id == value["trend_id"] and row.subject_id == ben
    assert row.lineage["final_sha256"] == "c" * 64 and row.lineage["post_id"] == f"p-{planner['run']}"
    # stage events other tests left on the shared topics arrive as jobs of origin "external": count ours
    ours = [r for r in await store.jobs(limit=1000) if r.origin == "trend"]
    assert sorted(r.status for r in ours).count("published") == 1 and len(ours) >= 3
    counts = await store.counts(datetime.now(UTC))
    assert counts.by_status["published"] >= 1 and counts.by_status["requested"] >= len(ours) - 1


async def _disabled(store: PostgresPlannerStore, subject: str) -> bool:
    return ("FACE", subject) in await store.disabled()

