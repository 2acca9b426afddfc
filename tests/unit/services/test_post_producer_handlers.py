"""The post-producer's handlers, broker-free: the in-memory bus and unit of work, the real consent view
(signed leases) with a stand-in registry, fakes for ffmpeg, ffprobe and C2PA, the object store in a
temporary folder and the in-memory rendered-jobs repository. No Kafka, no PostgreSQL, no ffmpeg: each
test runs in milliseconds. The same paths on real ffmpeg and PostgreSQL: tests/integration/
test_post_producer_consent.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.message import Event
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import InMemoryUnitOfWork
from reelfab.consent.decision import Decision
from reelfab.consent.gate import ConsentGate
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import RenderCompleted
from reelfab.errors import ObjectMissing, PermanentError
from reelfab.media.render import RenderJob, RenderStopped, StopCheck
from reelfab.media.spec_check import SpecCheck
from reelfab.service import ServiceContext, build_context
from reelfab.storage import FileStore, StoredObject
from reelfab_post_producer import domain, handlers
from reelfab_post_producer import main as post_main
from reelfab_post_producer.adapters import C2paSigner, FfmpegRenderer, FfprobeSpecCheck, StoreMedia
from reelfab_post_producer.bootstrap import PostProducer, bootstrap
from reelfab_post_producer.repository import InMemoryRenderedJobs
from tests.conftest import make_settings, unique
from tests.integration.media_handlers_support import Registry, event, job_id, lease, view

RENDER_COMPLETED = "reelfab.render.completed.v1"
JOB_FAILED = "reelfab.job.failed.v1"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


# ------------------------------------------------------------------------------ fakes


@dataclass
class FakeRenderer:
    """Writes a small file instead of running ffmpeg; ``during`` runs while it "renders"."""

    during: Callable[[], None] | None = None
    jobs: list[RenderJob] = field(default_factory=list)

    def render(self, job: RenderJob, *, should_stop: StopCheck | None = None) -> None:
        self.jobs.append(job)
        if self.during is not None:
            self.during()
        if should_stop is not None and (stop := should_stop()):
            raise RenderStopped(*stop)  # as reelfab.media.render does: ffmpeg killed, no output
        job.output.write_bytes(b"rendered:" + job.input.read_bytes())


@dataclass
class FakeSpecCheck:
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # the container tags it reports
    label_problem: str | None = None  # what it finds wrong with the visible label
    checked: list[Path] = field(default_factory=list)
    labels_checked: list[Path] = field(default_factory=list)

    def label(self, path: Path, duration_s: float) -> str | None:
        self.labels_checked.append(path)
        return self.label_problem

    def verify(self, path: Path, expected_duration_s: float) -> SpecCheck:
        assert path.is_file()
        self.checked.append(path)
        return SpecCheck(passed=not self.problems, width=1080, height=1920, fps=30.0, video_codec="h264",
                         video_profile="High", pix_fmt="yuv420p", audio_codec="aac", sample_rate=48000,
                         duration_s=expected_duration_s, problems=list(self.problems), metadata=dict(self.metadata))


@dataclass
class FakeSigner:
    after: Callable[[], None] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def sign(self, input: Path, output: Path, *, title: str, ingredients: Sequence[Mapping[str, str]]) -> str:
        output.write_bytes(input.read_bytes() + b":signed")
        self.calls.append({"title": title, "ingredients": [dict(i) for i in ingredients]})
        if self.after is not None:
            self.after()
        return "urn:c2pa:fake-manifest"


@dataclass(frozen=True)
class StoreThen(StoreMedia):
    """The object store, running ``then`` once the final file is stored."""

    then: Callable[[], None] = lambda: None

    def put_file(self, key: str, path: Path, *, move: bool = False) -> StoredObject:
        stored = super().put_file(key, path, move=move)
        self.then()
        return stored


# ------------------------------------------------------------------------------ the world


@dataclass
class World:
    post: PostProducer
    uow: InMemoryUnitOfWork
    registry: Registry
    renderer: FakeRenderer
    spec_check: FakeSpecCheck
    signer: FakeSigner
    jobs: InMemoryRenderedJobs
    files: FileStore
    tmp: Path

    def grant(self, subject: str, *, commercial: bool = False) -> None:
        self.post.view.apply(lease(subject, commercial=commercial))

    def revoke(self, subject: str) -> None:
        self.post.view.apply(lease(subject, 2, "REVOKED"))

    def swap_completed(self, subject: str, *, commercial: bool | None = False, **overrides: Any) -> Event[Any]:
        job = job_id()
        m = self.files.put_bytes(f"jobs/{job}/mezzanine.mkv", b"swapped mezzanine")
        track = json.dumps({"version": 1, "width": 180, "height": 320, "fps": 25.0, "frames": []}).encode()
        t = self.files.put_bytes(f"jobs/{job}/track.json", track)
        self.files.put_bytes(f"inputs/{job}/source.png", b"a copy of the subject's face")
        values = {
            "event_id": unique("ev"), "occurred_at": NOW, "producer": "swapper-gpu", "trace_id": "trace-1",
            "job_id": job, "subject_id": subject, "consent_version": 1, "mezzanine_uri": m.uri,
            "mezzanine_sha256": m.sha256, "face_track_uri": t.uri, "face_track_sha256": t.sha256,
            "backend": "classical", "swapper_model": "classical", "model_license": "non-commercial",
            "commercial_use_allowed": False, "frames": 25, "fps": 50.0, "duration_s": 1.0, "template_id": "dance-1",
            "template_tags": ["dance"], "template_sha256": "cd" * 32, "source_image_sha256": "ab" * 32,
            "platform": "tiktok", "caption_text": "consented", "arm_id": "arm-7", "commercial": commercial,
        }
        values.update(overrides)
        return event("SwapCompleted", "reelfab.swap.completed.v1", values)

    def objects(self, job: str) -> list[str]:
        return [o.key for p in (f"jobs/{job}", f"inputs/{job}") for o in self.files.list_objects(p)]

    def published(self, topic: str) -> list[Any]:
        return list(self.uow.on(topic))  # the typed records, as handed to the unit of work

    def work_left(self) -> list[Path]:
        return list(self.post.workdir.glob("*/*"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    settings = make_settings(state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri())
    spec = post_main.SPEC
    bus = InMemoryBus(settings, spec.name, default_codec())
    uow = InMemoryUnitOfWork(bus, spec.produces)
    ctx = ServiceContext(spec, settings, bus, None, Outbox(spec.db_schema, bus), uow)
    v, registry = view(spec.name), Registry()
    renderer, spec_check, signer = FakeRenderer(), FakeSpecCheck(), FakeSigner()
    post = bootstrap(ctx, view=v, gate=ConsentGate(v, registry),  # type: ignore[arg-type]
                     renderer=renderer, spec_check=spec_check, signer=signer, clock=lambda: NOW,
                     workdir=tmp_path / "work")
    assert isinstance(post.jobs, InMemoryRenderedJobs) and isinstance(post.store, StoreMedia)
    return World(post, uow, registry, renderer, spec_check, signer, post.jobs, post.store.files, tmp_path)


async def handle(w: World, ev: Event[Any]) -> None:
    await handlers.on_swap_completed(w.post)(ev)


def only_failure(w: World) -> dict[str, Any]:
    assert w.published(RENDER_COMPLETED) == []
    failed = w.published(JOB_FAILED)
    assert len(failed) == 1, failed
    return failed[0]


# ------------------------------------------------------------------------------ allowed


@pytest.mark.parametrize("commercial", [False, True])
async def test_an_allowed_job_is_announced_once_with_its_commercial_flag(world: World, commercial: bool) -> None:
    w, subject = world, unique("vera")
    w.grant(subject, commercial=True)
    ev = w.swap_completed(subject, commercial=commercial)
    await handle(w, ev)
    [done] = w.published(RENDER_COMPLETED)
    assert w.published(JOB_FAILED) == []
    assert done.commercial is commercial  # carried for the publisher's check
    job = ev.record.job_id
    assert (done.job_id, done.subject_id, done.trace_id, done.arm_id) == (job, subject, "trace-1", "arm-7")
    assert done.occurred_at == NOW and done.producer == "post-producer" and done.is_aigc
    assert done.c2pa_manifest_label == "urn:c2pa:fake-manifest" and done.spec_check.passed
    assert done.hashtags[0] == "aigenerated" and done.title
    final = w.files.local_path(done.final_uri)
    assert final == w.files.root / "jobs" / job / "final.mp4"
    assert final.read_bytes() == b"rendered:swapped mezzanine:signed"
    # both checks (before and after rendering) ask the registry with the job's flag and id, consuming nothing
    assert [(c["request"].commercial, c["request"].purpose, c["consume"], c["job_id"]) for c in w.registry.calls] \
        == [(commercial, "render", False, job)] * 2
    assert w.jobs.rows == {job: subject}
    assert f"jobs/{job}/mezzanine.mkv" in w.objects(job)  # kept for retention
    assert w.work_left() == []
    [rendered] = w.renderer.jobs
    assert rendered.metadata["ai_generated"] == "true" and rendered.metadata["job_id"] == job
    assert [i["relationship"] for i in w.signer.calls[0]["ingredients"]] == ["parentOf", "componentOf"]
    assert w.uow.done == {ev.event_id: "render"}


async def test_a_video_the_swapper_rendered_is_checked_and_signed_without_rendering_again(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject, rendered=True)  # fused mode: mezzanine_uri names the platform render
    job = ev.record.job_id
    w.spec_check.metadata = {"job_id": job, "ai_generated": "true", "consent_version": "1"}
    await handle(w, ev)
    [done] = w.published(RENDER_COMPLETED)
    assert w.renderer.jobs == []  # one lossy encode: the swapper's
    assert w.spec_check.checked == w.spec_check.labels_checked == [w.files.local_path(ev.record.mezzanine_uri)]
    assert w.files.local_path(done.final_uri).read_bytes() == b"swapped mezzanine:signed"
    assert done.is_aigc and done.spec_check.passed and done.c2pa_manifest_label == "urn:c2pa:fake-manifest"
    assert [c["consume"] for c in w.registry.calls] == [False, False]  # consent before and after, as ever
    assert w.work_left() == []


@pytest.mark.parametrize("tags", [{"ai_generated": "true"}, {"job_id": "job-of-someone-else", "ai_generated": "true"},
                                  {"job_id": "JOB"}], ids=["untagged", "another-job", "no-ai-label"])
async def test_a_swapper_render_not_tagged_as_the_jobs_ai_video_is_never_signed(world: World, tags: dict[str, str]) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject, rendered=True)
    w.spec_check.metadata = {k: v.replace("JOB", ev.record.job_id) for k, v in tags.items()}
    with pytest.raises(domain.SpecCheckFailed, match="not tagged as the job's AI-generated video"):
        await handle(w, ev)
    assert w.signer.calls == [] and w.uow.published == [] and w.work_left() == []


async def test_a_swapper_render_without_the_visible_label_is_never_signed(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject, rendered=True)
    w.spec_check.metadata = {"job_id": ev.record.job_id, "ai_generated": "true"}  # tags any ffmpeg can write
    w.spec_check.label_problem = "the visible label 'AI-generated' is not in the picture at the top-left corner"
    with pytest.raises(domain.SpecCheckFailed, match="is not in the picture"):
        await handle(w, ev)
    assert w.signer.calls == [] and w.uow.published == [] and w.work_left() == []


async def test_the_announcement_is_readable_by_its_consumers(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    await handle(w, w.swap_completed(subject))
    [value] = w.uow.on(RENDER_COMPLETED)
    record = w.uow.bus.codec.decode(w.uow.bus.encode(RENDER_COMPLETED, value)[2]).value  # as it travels
    assert RenderCompleted.model_validate(record).c2pa_manifest_label == "urn:c2pa:fake-manifest"  # as consumers read it


async def test_an_unknown_commercial_flag_asks_the_stricter_question(world: World) -> None:
    w = world
    non_commercial, commercial = unique("vera"), unique("ada")
    w.grant(non_commercial, commercial=False)
    w.grant(commercial, commercial=True)
    await handle(w, refused := w.swap_completed(non_commercial, commercial=None))
    failed = only_failure(w)
    assert failed.reason_code == "consent.commercial_not_allowed" and failed.job_id == refused.record.job_id
    assert w.renderer.jobs == []  # the view said no (the registry, asked whether the view is behind, agreed)
    assert [c["request"].commercial for c in w.registry.calls] == [True]
    await handle(w, allowed := w.swap_completed(commercial, commercial=None))
    [done] = w.published(RENDER_COMPLETED)
    assert done.job_id == allowed.record.job_id and done.commercial is None  # null stays null
    assert [c["request"].commercial for c in w.registry.calls] == [True] * 3


# ------------------------------------------------------------------------------ consent stops the job


async def test_consent_denied_before_rendering_renders_nothing_and_removes_the_jobs_media(world: World) -> None:
    w = world
    w.registry.answers = [Decision(False, "no_consent", "no consent on record")]
    ev = w.swap_completed(unique("nobody"))  # no lease in the view; the registry agrees
    await handle(w, ev)
    failed = only_failure(w)
    assert (failed.reason_code, failed.stage, failed.retryable) == ("consent.no_consent", "post-producer", False)
    assert (failed.job_id, failed.subject_id, failed.attempts) == (ev.record.job_id, ev.record.subject_id, 1)
    assert w.renderer.jobs == [] and w.objects(ev.record.job_id) == [] and w.jobs.rows == {}


async def test_a_revocation_only_the_registry_knows_stops_the_job_before_rendering(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    w.registry.answers = [Decision(False, "revoked", "consent v2 was revoked", 2)]
    ev = w.swap_completed(subject)
    await handle(w, ev)
    assert only_failure(w).reason_code == "consent.revoked"
    assert w.renderer.jobs == [] and w.objects(ev.record.job_id) == []


async def test_a_revocation_during_the_render_stops_it(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    w.renderer.during = lambda: w.revoke(subject)  # the consent topic brings it while ffmpeg runs
    ev = w.swap_completed(subject)
    await handle(w, ev)
    failed = only_failure(w)
    assert failed.reason_code == "consent.revoked" and "the render stopped" in failed.reason
    assert w.signer.calls == [] and w.work_left() == [] and w.objects(ev.record.job_id) == []
    assert len(w.registry.calls) == 1  # asked before rendering only


async def test_a_revocation_while_signing_is_caught_before_anything_is_stored(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    w.signer.after = lambda: w.revoke(subject)  # ffmpeg finished; the view hears of it now
    ev = w.swap_completed(subject)
    await handle(w, ev)
    failed = only_failure(w)
    assert failed.reason_code == "consent.revoked" and "checked after rendering" in failed.reason
    assert w.objects(ev.record.job_id) == [] and w.work_left() == [] and w.jobs.rows == {}


async def test_a_revocation_the_registry_reports_after_rendering_deletes_the_output(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)  # the view never hears of it
    w.registry.answers = [Decision(True, "ok", "allowed", 1), Decision(False, "revoked", "consent v2 was revoked", 2)]
    ev = w.swap_completed(subject)
    await handle(w, ev)
    failed = only_failure(w)
    assert failed.reason_code == "consent.revoked" and "the output was deleted" in failed.reason
    assert w.objects(ev.record.job_id) == [] and w.work_left() == []


async def test_a_revocation_while_the_final_file_is_stored_is_caught_before_announcing(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    w.post.store = StoreThen(w.files, then=lambda: w.revoke(subject))  # after the second check, before announcing
    ev = w.swap_completed(subject)
    await handle(w, ev)
    failed = only_failure(w)
    assert failed.reason_code == "consent.revoked" and "after rendering" in failed.reason
    assert len(w.registry.calls) == 2  # both checks had said yes
    assert w.objects(ev.record.job_id) == [] and w.jobs.rows == {}


# ------------------------------------------------------------------------------ faults


async def test_a_render_that_misses_the_platform_spec_is_a_permanent_failure(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    w.spec_check.problems = ["height 1080, not 1920"]
    ev = w.swap_completed(subject)
    with pytest.raises(domain.SpecCheckFailed, match="height 1080, not 1920"):
        await handle(w, ev)
    assert w.uow.published == [] and not await w.uow.processed(ev.event_id)  # the DLQ's, not a decision
    assert w.signer.calls == [] and w.work_left() == []
    assert f"jobs/{ev.record.job_id}/mezzanine.mkv" in w.objects(ev.record.job_id)  # not a consent stop: kept


@pytest.mark.parametrize("broken", ["mezzanine_sha256", "face_track_sha256"])
async def test_a_poison_job_raises_and_announces_nothing(world: World, broken: str) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject, **{broken: "00" * 32})
    for _ in range(2):  # redelivered, it fails the same way: it is never marked processed
        with pytest.raises(PermanentError) as raised:
            await handle(w, ev)
        assert broken != "face_track_sha256" or isinstance(raised.value, ObjectMissing)
    assert w.uow.published == [] and w.uow.done == {} and w.renderer.jobs == [] and w.jobs.rows == {}


async def test_a_redelivered_job_is_announced_once(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject)
    await handle(w, ev)
    await handle(w, ev)  # redelivered after the commit: the early check stops it
    assert len(w.published(RENDER_COMPLETED)) == 1 and len(w.renderer.jobs) == 1
    w.registry.answers = [Decision(False, "no_consent", "no consent on record")]
    denied = w.swap_completed(unique("nobody"))
    await handle(w, denied)
    await handle(w, denied)
    assert len(w.published(JOB_FAILED)) == 1


async def test_concurrent_duplicates_announce_once(world: World) -> None:
    w, subject = world, unique("vera")
    w.grant(subject)
    ev = w.swap_completed(subject)
    await asyncio.gather(handle(w, ev), handle(w, ev))  # both pass the early check; one unit commits
    assert len(w.published(RENDER_COMPLETED)) == 1 and w.published(JOB_FAILED) == []
    assert len(w.jobs.rows) == 1 and w.uow.commits == 1


# ------------------------------------------------------------------------------ consent withdrawn


async def test_a_withdrawn_consent_removes_the_subjects_rendered_jobs(world: World) -> None:
    w = world
    w.post.view.listeners.append(handlers.on_consent_withdrawn(w.post))
    vera, ada = unique("vera"), unique("ada")
    for subject in (vera, ada):
        w.grant(subject)
    mine = [w.swap_completed(vera), w.swap_completed(vera)]
    theirs = w.swap_completed(ada)
    for ev in (*mine, theirs):
        await handle(w, ev)
    assert len(w.jobs.rows) == 3
    await w.post.view.apply_async(lease(ada, 2, "AMENDED"))  # not a withdrawal: nothing goes
    await w.post.view.apply_async(lease(vera, 2, "REVOKED"))  # as the consent topic delivers it
    for ev in mine:
        assert w.objects(ev.record.job_id) == []
    assert w.jobs.rows == {theirs.record.job_id: ada}
    assert f"jobs/{theirs.record.job_id}/final.mp4" in w.objects(theirs.record.job_id)
    await w.post.view.apply_async(lease(ada, 3, "ERASED"))
    assert w.objects(theirs.record.job_id) == [] and w.jobs.rows == {}


# ------------------------------------------------------------------------------ wiring and domain


def test_bootstrap_wires_the_real_adapters(tmp_path: Path) -> None:
    settings = make_settings(state_dir=tmp_path, storage_root=(tmp_path / "objects").as_uri())
    ctx = build_context(post_main.SPEC, settings, InMemoryBus(settings, "post-producer", default_codec()), None,
                        post_main.wire)
    post = ctx.extras["post"]
    assert isinstance(post, PostProducer) and post.uow is ctx.uow
    assert isinstance(post.renderer, FfmpegRenderer) and isinstance(post.spec_check, FfprobeSpecCheck)
    assert isinstance(post.signer, C2paSigner) and isinstance(post.store, StoreMedia)
    assert isinstance(post.gate, ConsentGate) and isinstance(post.jobs, InMemoryRenderedJobs)  # no pool
    assert post.workdir == tmp_path / "post-work" and len(post.view.listeners) == 1


def test_the_commercial_rule() -> None:
    assert [domain.checked_as_commercial(f) for f in (None, True, False)] == [True, True, False]
    assert [domain.announced_commercial(f) for f in (None, True, False)] == [None, True, False]


def test_consent_outcomes_become_job_failed_reasons() -> None:
    revoked = Decision(False, "revoked", "consent v2 was revoked", 2)
    assert domain.denied(revoked) == domain.Failure("consent.revoked", "consent v2 was revoked")
    assert domain.denied_after_rendering(revoked).detail.endswith("(checked after rendering: the output was deleted)")
    assert domain.stopped_while_rendering("erased", "consent of x is erased").reason_code == "consent.erased"
    assert domain.withdrawn_before_announcing("expired", "gone").purges_media
    assert not domain.Failure("render.spec", "height").purges_media
    assert [domain.takes_rendered_media(s) for s in ("REVOKED", "ERASED", "AMENDED", "GRANTED", "EXPIRED")] \
        == [True, True, False, False, False]
