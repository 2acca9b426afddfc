"""The swapper honours priority on real Kafka and PostgreSQL: swapper-gpu runs as a service (in this
process, main.wire as deployed: the classical backend, its own schema, a consumer group of its own, one
run slot) while 100 normal jobs queue on reelfab.swap.requested.v1 behind a running one; an expedited
job then published on reelfab.swap.expedited.v1 starts before every one of them and is swapped, and an
expedited job already past its deadline fails (deadline_passed) without being started.

Start order is what the swapper's first step saw: every job's workflow opens with the local consent
check, so a pass-through wrapper on the service's own gate records the order jobs started in (and holds
the first job, so the backlog is really queued when the expedited job arrives; nothing is timed); the
events agree (the expedited job's swap.completed is made before any normal job's job.failed). The
normal jobs are real jobs the swapper decides quickly: their 1-second template fails the template
quality gate (judged once per template content), so the backlog drains in seconds."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import public_key_text
from reelfab.contracts.codec import default_codec
from reelfab.devtools.embedded import RunningService
from reelfab.devtools.synthetic import template_clip, virtual_person
from reelfab.settings import Settings
from reelfab.storage import FileStore, StoredObject, open_store
from reelfab_swapper_gpu import main as swapper_main
from reelfab_swapper_gpu.bootstrap import Swapper
from reelfab_swapper_gpu.priority import Lane
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID, lease

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
REQUESTED, EXPEDITED = "reelfab.swap.requested.v1", "reelfab.swap.expedited.v1"
COMPLETED, FAILED = "reelfab.swap.completed.v1", "reelfab.job.failed.v1"
BACKLOG = 100


class StartOrder:
    """Wraps the running swapper's consent gate: records each of this run's jobs (subjects ending in
    ``run``) at its first check (the workflow's first step once the job holds its run slot) and holds
    the subject ``hold`` there until ``release`` is set; then asks the real gate."""

    def __init__(self, gate: Any, run: str, hold: str) -> None:
        self.gate, self.run, self.hold = gate, run, hold
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def check(self, **kwargs: Any) -> Any:
        subject = kwargs["subject"]
        if subject.endswith(self.run) and subject not in self.started:
            self.started.append(subject)
        if subject == self.hold:
            await self.release.wait()
        return await self.gate.check(**kwargs)


async def _group_starts_at_the_end(settings: Settings, group: str, topics: tuple[str, ...]) -> None:
    """Commit ``group``'s offsets at the topics' ends, so the service consumes only this test's jobs
    (a new group would otherwise start with every job earlier runs left on the topics)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - the topics' partitions, as KafkaBus.scan
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        assert parts, topics
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit({tp: ends[tp] for tp in parts})
    finally:
        await consumer.stop()


def _admissions(lane: Lane) -> float:
    return REGISTRY.get_sample_value("reelfab_swap_admissions_total", {"lane": lane.value}) or 0.0


@pytest.fixture
async def running(stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    run = uuid.uuid4().hex[:8]
    settings = make_settings(swapper_memory_bytes=1,  # one run slot: every job waits its turn
                             state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
                             face_backend="classical", consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}",
                             log_format="json")
    wired: list[Swapper] = []

    def wire(ctx: Any) -> None:
        swapper_main.wire(ctx)  # as deployed: both topics, the admission, the consent view
        wired.append(ctx.extras["swapper"])

    module = ModuleType("swapper_under_test")
    spec = dataclasses.replace(swapper_main.SPEC, name=f"swapper-{run}")  # a consumer group of its own
    module.SPEC, module.wire = spec, wire  # type: ignore[attr-defined]
    await _group_starts_at_the_end(settings, spec.name, (REQUESTED, EXPEDITED))
    bus = KafkaBus(settings, "test-driver", default_codec())
    await bus.start()
    service = RunningService(module, settings, schema=unique("swapper_gpu"))
    f: dict[str, Any] = {"service": service, "bus": bus, "run": run, "tmp": tmp_path,
                         "store": open_store(settings.storage_root)}
    try:
        await service.ready()
        f["swapper"] = wired[0]
        yield f
    finally:
        if (order := f.get("order")) is not None:
            order.release.set()  # a failed test must not leave a job held: the service could not stop
        await service.stop()
        await bus.stop()


async def _job(f: dict[str, Any], subject: str, face: StoredObject, template: StoredObject,
               **extra: Any) -> dict[str, Any]:
    applied = await f["swapper"].view.apply_async(lease(subject, image_sha256=face.sha256))  # the swapper's view
    assert applied.outcome == "applied", applied
    return {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "planner",
        "job_id": f"job-{uuid.uuid4().hex[:12]}", "subject_id": subject, "consent_version": 1,
        "source_image_uri": face.uri, "source_image_sha256": face.sha256, "template_id": "dance-1",
        "template_uri": template.uri, "template_sha256": template.sha256, "template_tags": ["dance"],
        "swapper_model": "classical", "platform": "tiktok", "commercial": False, **extra,
    }


async def _outcomes(bus: KafkaBus, job_ids: set[str], since: datetime) -> dict[str, tuple[str, dict[str, Any]]]:
    codec = default_codec()
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for topic in (COMPLETED, FAILED):
        for m in await bus.scan(topic, since):
            value = codec.decode(m.value).value
            if value["job_id"] in job_ids:
                found[value["job_id"]] = (topic, value)
    return found


async def test_an_expedited_job_starts_before_100_queued_normal_jobs(running: dict[str, Any]) -> None:
    f = running
    swapper: Swapper = f["swapper"]
    run, tmp, store, bus = f["run"], f["tmp"], f["store"], f["bus"]
    assert isinstance(store, FileStore) and swapper.admission.slots == 1
    since = datetime.now(UTC) - timedelta(seconds=5)
    face = store.put_bytes(f"faces/{run}/vera.png", cv2.imencode(".png", virtual_person(31))[1].tobytes())
    # normal jobs: a 1-second clip (the template quality gate wants 5 s): decided in milliseconds once judged
    short = store.put_file(f"templates/{run}/short.mp4", template_clip(tmp / "short.mp4", seed=3, seconds=1.0,
                                                                        size=(180, 320), with_audio=False).path)
    clip = store.put_file(f"templates/{run}/dance.mp4", template_clip(tmp / "dance.mp4", seed=7, seconds=5.0,
                                                                       size=(540, 960), with_audio=False).path)
    busy, urgent, urgent2, late = f"busy-{run}", f"urgent-{run}", f"urgent2-{run}", f"late-{run}"
    normal = [f"n{i:03d}-{run}" for i in range(BACKLOG)]
    order = f["order"] = StartOrder(swapper.ports.gate, run, hold=busy)
    swapper.ports.gate = order
    admitted = {lane: _admissions(lane) for lane in Lane}

    jobs = {busy: await _job(f, busy, face, short)}
    await bus.publish(REQUESTED, jobs[busy])
    await eventually(lambda: order.started == [busy], timeout=90)  # it holds the only run slot
    for subject in normal:  # the backlog: queued behind the running job
        jobs[subject] = await _job(f, subject, face, short)
        await bus.publish(REQUESTED, jobs[subject])
    now = datetime.now(UTC)
    jobs[late] = await _job(f, late, face, clip, priority=10, deadline=now - timedelta(seconds=1), trend_id="tr-late")
    jobs[urgent] = await _job(f, urgent, face, clip, priority=10, deadline=now + timedelta(minutes=30), trend_id="tr-hot")
    jobs[urgent2] = await _job(f, urgent2, face, clip, priority=10, deadline=now + timedelta(minutes=30), trend_id="tr-hot")
    await bus.publish(EXPEDITED, jobs[late])
    await bus.publish(EXPEDITED, jobs[urgent])
    await bus.publish(EXPEDITED, jobs[urgent2])  # a trend's second job: its consumer hands it in after the first
    await eventually(lambda: swapper.admission.waiting(Lane.EXPEDITED) == 1, timeout=60)  # the urgent job waits
    assert order.started == [busy], "no queued normal job may start while the only slot is busy"
    order.release.set()

    ids = {j["job_id"]: s for s, j in jobs.items()}
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    async def all_decided() -> bool:
        assert not f["service"].task.done(), "the swapper stopped"
        found.update(await _outcomes(bus, set(ids) - set(found), since))
        return len(found) == len(ids)

    await eventually(all_decided, timeout=240, interval=0.5)

    # start order: the running job, then the expedited ones, then the backlog; the late job never started
    # (the two expedited jobs' keys may fall in different partitions: Kafka orders them within one only)
    assert order.started[0] == busy and set(order.started[1:3]) == {urgent, urgent2}, order.started[:5]
    assert sorted(order.started[3:]) == normal and late not in order.started
    outcome = {ids[job_id]: (topic, value) for job_id, (topic, value) in found.items()}
    topic, done = outcome[urgent]
    assert topic == COMPLETED, done
    assert done["trend_id"] == "tr-hot" and done["frames_swapped"] > 0
    # the events agree: with one run slot, the expedited job was swapped (its record is made in its slot)
    # before any queued normal job was decided
    assert all(outcome[s][1]["occurred_at"] > done["occurred_at"] for s in normal)
    topic, done2 = outcome[urgent2]
    assert topic == COMPLETED and all(outcome[s][1]["occurred_at"] > done2["occurred_at"] for s in normal), done2
    topic, failed = outcome[late]
    assert topic == FAILED and failed["reason_code"] == "deadline_passed" and not failed["retryable"], failed
    assert failed["stage"] == swapper.ctx.spec.name and "not started" in failed["reason"]
    codes = {outcome[s][1]["reason_code"] for s in [busy, *normal]}
    [code] = codes  # every normal job ran its workflow and was decided, on the one verdict for the template
    assert code.startswith("template.") and outcome[busy][1]["stage"] == swapper.ctx.spec.name, codes
    assert _admissions(Lane.EXPEDITED) == admitted[Lane.EXPEDITED] + 2  # the late job took no slot
    assert _admissions(Lane.NORMAL) == admitted[Lane.NORMAL] + BACKLOG + 1
