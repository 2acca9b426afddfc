"""swapper-gpu's handler, broker-free: the in-memory bus and unit of work, a stand-in consent gate and
view, a file store on tmp_path, a stand-in template check, engine and clip swapper. No Kafka, no
PostgreSQL, no ffmpeg, no face model: every path of a swap job in milliseconds."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.message import Event
from reelfab.bus.unit_of_work import InMemoryUnitOfWork
from reelfab.consent.decision import Decision
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import Record, SwapCompleted, SwapRequested
from reelfab.contracts.topics import JOB_FAILED, SWAP_COMPLETED, SWAP_REQUESTED
from reelfab.errors import ObjectRefused, PermanentError
from reelfab.faces.errors import SwapQualityError
from reelfab.faces.qc import QCResult, Reason, TemplateRules
from reelfab.faces.report import FrameStatus, QualityGate, SwapReport
from reelfab.faces.template_track import TemplateTrack
from reelfab.faces.types import Face, FaceEngine
from reelfab.media.errors import MediaError
from reelfab.media.probe import VideoInfo
from reelfab.service import build_context
from reelfab.storage import FileStore
from reelfab_swapper_gpu import handlers, main, progress
from reelfab_swapper_gpu.bootstrap import Swapper, bootstrap
from reelfab_swapper_gpu.domain import CLASSICAL_LICENCE, ModelChoice
from reelfab_swapper_gpu.swap import DEFAULT_GATE, RenderOrder, StageClock, Stopped, SwapOutput
from tests.conftest import make_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FACE_PNG = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
ALLOWED = Decision(True, "ok", "consent v3 covers swap on tiktok", 3)
MANIFEST = {"ghost_2_256": ("Apache-2.0", True), "inswapper_128": ("non-commercial", False)}


# ------------------------------------------------------------------------------------ fakes


class FakeGate:
    """Answers the local check, then the consuming check, from ``answers`` (the last one repeats)."""

    def __init__(self, *answers: Decision) -> None:
        self.answers = list(answers) or [ALLOWED]
        self.calls: list[dict[str, Any]] = []

    async def check(self, *, subject: str, purpose: str, platform: str, tags: tuple[str, ...] = (),
                    commercial: bool = True, image_sha256: str | None = None, image_bytes: bytes | None = None,
                    consume: bool = False, job_id: str | None = None) -> Decision:
        self.calls.append({"subject": subject, "purpose": purpose, "platform": platform, "tags": tags,
                           "commercial": commercial, "image": image_bytes, "consume": consume, "job_id": job_id})
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@dataclass
class FakeView:
    gone: dict[str, tuple[str, str]] = field(default_factory=dict)

    def withdrawn(self, subject: str) -> tuple[str, str] | None:
        return self.gone.get(subject)

    def revoke(self, subject: str) -> None:
        self.gone[subject] = ("revoked", f"consent of {subject} is revoked")


class SpyStore(FileStore):
    """A real file store that remembers which objects were read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes:
        self.reads.append(uri)
        return super().get_bytes(uri, expect_sha256=expect_sha256)


@dataclass
class FakeSwap:
    """Stands in for run_swap: asks ``should_stop`` between its two "batches" like the real one, and
    leaves a mezzanine and a track in the job's work folder. ``between`` runs after the first batch."""

    between: Any = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, tuple[int, int]]] = field(default_factory=list)  # what progress.running() said per batch
    report: SwapReport = field(default_factory=lambda: SwapReport(swapped=44, held=2, lost=3, rejected=1))

    def __call__(self, engine: FaceEngine, source_image: Any, template: Path, workdir: Path, *,
                 track: TemplateTrack | None = None, detect_every: int = 5, batch_size: int = 8,
                 should_stop: Any = lambda: None, on_frames: Any = lambda n: None, gate: QualityGate = DEFAULT_GATE,
                 render: RenderOrder | None = None, clock: StageClock | None = None) -> SwapOutput:
        self.calls.append({"engine": engine, "shape": source_image.shape, "template": template, "workdir": workdir,
                           "gate": gate, "track": track, "render": render})
        if clock is not None:
            clock.seconds["swap"] += 0.25
        for batch in range(2):
            if batch == 1 and self.between is not None:
                self.between()
            if stop := should_stop():
                raise Stopped(*stop)
            self.progress.append(progress.running())
            on_frames(25)
        (workdir / "mezzanine.mkv").write_bytes(b"swapped frames")
        (workdir / "track.json").write_text(json.dumps({"frames": [None] * 50}))
        if (reason := gate.judge(self.report)) is not None:  # as run_swap: after the swap, before anything ships
            raise SwapQualityError(reason, self.report)
        name = "render.mp4" if render is not None else "mezzanine.mkv"
        (workdir / name).write_bytes(b"rendered video" if render is not None else b"swapped frames")
        return SwapOutput(workdir / name, workdir / "track.json", _info(template), 50, 48, 0.5, self.report,
                          rendered=render is not None)


def _info(template: Path) -> VideoInfo:
    return VideoInfo(template, 1080, 1920, 25.0, 2.0, 50, "h264", "yuv420p", 0, True, "aac", 48000, False, {})


@dataclass
class FakeTrack:
    """Stands in for tracking a template (reelfab.faces.template_track.track_template): a track whose
    frame statuses are ``report``'s (the FakeSwap's, so both tell the same story)."""

    report: SwapReport
    calls: list[Path] = field(default_factory=list)

    def __call__(self, engine: FaceEngine, template: Path, detect_every: int) -> TemplateTrack:
        self.calls.append(template)
        r = self.report
        statuses = ([FrameStatus.SWAPPED] * r.swapped + [FrameStatus.HELD] * r.held + [FrameStatus.LOST] * r.lost
                    + [FrameStatus.REJECTED] * r.rejected)
        face = Face((10.0, 10.0, 60.0, 60.0), 0.9, np.zeros((5, 2), np.float32))
        faces = [face if s in (FrameStatus.SWAPPED, FrameStatus.HELD) else None for s in statuses]
        return TemplateTrack(_info(template), tuple(faces), tuple(statuses), (0,) * len(statuses), detect_every, 0.1)


@dataclass
class FakeTemplateCheck:
    result: QCResult | Exception = field(default_factory=lambda: QCResult(True))
    calls: int = 0

    def __call__(self, path: Path, engine: FaceEngine, rules: TemplateRules) -> QCResult:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@dataclass
class World:
    swapper: Swapper
    uow: InMemoryUnitOfWork
    bus: InMemoryBus
    gate: FakeGate
    view: FakeView
    store: SpyStore
    swap: FakeSwap
    qc: FakeTemplateCheck
    tracks: FakeTrack
    engines: list[ModelChoice]
    root: Path

    def on(self, topic: str) -> list[dict[str, Any]]:
        """What committed units announced on ``topic``, as plain values."""
        return [v.model_dump() if isinstance(v, Record) else dict(v) for v in self.uow.on(topic)]

    def failed(self) -> list[tuple[str, str]]:
        return [(v["reason_code"], v["reason"]) for v in self.on(JOB_FAILED)]

    def job_objects(self, job_id: str) -> list[str]:
        return sorted(o.key for p in (f"jobs/{job_id}", f"inputs/{job_id}") for o in self.store.list_objects(p))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def make_world(tmp_path: Path, *answers: Decision, settings_overrides: dict[str, Any] | None = None,
               **options: Any) -> World:
    settings = make_settings(state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
                             face_backend="classical", **(settings_overrides or {}))
    bus = InMemoryBus(settings, main.SPEC.name, default_codec())
    ctx = build_context(main.SPEC, settings, bus, None, lambda ctx: None)
    assert isinstance(ctx.uow, InMemoryUnitOfWork)
    gate, view, store = FakeGate(*answers), FakeView(), SpyStore(tmp_path / "objects")
    swap, qc, engines = FakeSwap(), FakeTemplateCheck(), []

    def engine(choice: ModelChoice) -> FaceEngine:
        engines.append(choice)
        return cast(FaceEngine, object())

    options = {"manifest": MANIFEST, "installed": {"ghost_2_256", "inswapper_128"}, **options}
    tracks = FakeTrack(swap.report)
    swapper = bootstrap(ctx, store=store, view=view, gate=gate, engine_factory=engine, swap_clip=swap,
                        clock=lambda: NOW, template_check=qc, track_template=tracks, workdir=tmp_path / "work", **options)
    return World(swapper, ctx.uow, bus, gate, view, store, swap, qc, tracks, engines, tmp_path)


def job(w: World, **overrides: Any) -> Event[Any]:
    """A swap.requested event whose face and template are in the store under inputs/<job id>/."""
    job_id = f"job-{uuid.uuid4().hex[:10]}"
    face = w.store.put_bytes(f"inputs/{job_id}/face.png", FACE_PNG)
    template = w.store.put_bytes(f"inputs/{job_id}/template.mp4", b"a template clip")
    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "occurred_at": NOW - timedelta(seconds=4), "producer": "planner",
        "trace_id": "trace-1", "job_id": job_id, "subject_id": "vera", "consent_version": 1,
        "source_image_uri": face.uri, "source_image_sha256": face.sha256, "template_id": "dance-1",
        "template_uri": template.uri, "template_sha256": template.sha256, "template_tags": ["dance"],
        "swapper_model": "classical", "platform": "tiktok", "commercial": False, "caption_text": "Dance, consented",
        "caption_style": "bold", "trend_id": "trend-7", "arm_id": "arm-2",
    }
    values.update(overrides)
    return Event(SwapRequested(**values), SWAP_REQUESTED, job_id, 0, 0, 1)


async def run(w: World, ev: Event[Any]) -> None:
    await handlers.on_swap_requested(w.swapper)(ev)


# ------------------------------------------------------------------------------------ allowed


@pytest.mark.parametrize(("commercial", "model", "backend", "licence"), [
    (False, "classical", None, CLASSICAL_LICENCE),
    (True, "ghost_2_256", "onnx", "Apache-2.0"),
], ids=["classical", "commercial-onnx"])
async def test_an_allowed_job_announces_one_swap_completed(
    world: World, commercial: bool, model: str, backend: str | None, licence: str
) -> None:
    w = world
    ev = job(w, commercial=commercial, swapper_model=model, backend=backend)
    await run(w, ev)
    assert w.uow.on(JOB_FAILED) == []
    [record] = w.uow.on(SWAP_COMPLETED)
    assert isinstance(record, SwapCompleted)  # a typed record, not a dict
    done = record.model_dump()
    j = ev.record
    assert {k: done[k] for k in ("job_id", "subject_id", "trace_id", "producer", "template_id", "template_uri",
                                  "template_sha256", "source_image_sha256", "platform", "caption_text",
                                  "caption_style", "trend_id", "arm_id", "music_uri")} == {
        "job_id": j.job_id, "subject_id": "vera", "trace_id": "trace-1", "producer": "swapper-gpu",
        "template_id": "dance-1", "template_uri": j.template_uri, "template_sha256": j.template_sha256,
        "source_image_sha256": j.source_image_sha256, "platform": "tiktok", "caption_text": "Dance, consented",
        "caption_style": "bold", "trend_id": "trend-7", "arm_id": "arm-2", "music_uri": None}
    assert done["commercial"] is commercial  # the post-producer checks consent for the same use
    assert (done["backend"], done["swapper_model"], done["model_license"]) == (backend or "classical", model, licence)
    assert done["commercial_use_allowed"] is commercial
    assert done["consent_version"] == 3  # what the consuming check allowed, not what the job assumed
    assert (done["frames"], done["fps"], done["duration_s"], done["template_tags"]) == (50, 100.0, 2.0, ["dance"])
    counts = ("frames_swapped", "frames_held", "frames_lost", "frames_rejected")
    assert tuple(done[k] for k in counts) == (44, 2, 3, 1)  # what happened to every frame, on the record
    assert done["occurred_at"] == NOW
    assert done["mezzanine_uri"].endswith(f"jobs/{j.job_id}/mezzanine.mkv")
    assert w.store.get_bytes(done["mezzanine_uri"], expect_sha256=done["mezzanine_sha256"]) == b"swapped frames"
    assert w.store.get_bytes(done["face_track_uri"], expect_sha256=done["face_track_sha256"]).startswith(b"{")
    # consent: the local view first, with no image; then the consuming check naming the job, with the face
    local, consuming = w.gate.calls
    assert (local["image"], local["consume"], local["commercial"], local["tags"]) == (None, False, commercial, ("dance",))
    assert consuming["image"] == FACE_PNG and consuming["consume"] and consuming["job_id"] == j.job_id
    assert consuming["commercial"] is commercial
    assert w.swap.calls[0]["shape"] == (8, 8, 3) and w.engines == [w.engines[0]]  # one engine, loaded once
    assert list((w.root / "work").iterdir()) == []  # the work folder went with the job
    assert w.uow.done == {ev.event_id: "swap"} and w.uow.commits == 1
    assert done["rendered"] is False and w.swap.calls[0]["render"] is None  # a mezzanine for the post-producer
    assert w.swap.calls[0]["track"] is not None and w.swap.calls[0]["track"].frames == 50


async def test_a_running_swap_reports_its_frames_as_they_are_made(world: World) -> None:
    w = world
    made = progress.FRAMES_MADE._value.get()
    ev = job(w)
    await run(w, ev)
    j = ev.record.job_id
    assert [seen.get(j) for seen in w.swap.progress] == [(0, 50), (25, 50)]  # (done, frames in the clip)
    assert progress.FRAMES_MADE._value.get() - made == 50
    assert j not in progress.running()  # gone when the job is


async def test_a_template_is_tracked_once_for_every_job_on_it(world: World) -> None:
    w = world
    first, second = job(w), job(w)  # the same template bytes under two URIs
    another = w.store.put_bytes("inputs/templates/another.mp4", b"another template clip")
    other = job(w, template_uri=another.uri, template_sha256=another.sha256)
    for ev in (first, second, other):
        await run(w, ev)
    assert w.failed() == [] and len(w.uow.on(SWAP_COMPLETED)) == 3
    assert len(w.tracks.calls) == 2  # once per template content, not per job
    assert w.swapper.tracks.hits == 1 and w.swapper.tracks.misses == 2
    assert w.swap.calls[0]["track"] is w.swap.calls[1]["track"]


async def test_fused_mode_renders_as_it_swaps_and_says_so_on_the_record(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def stage_count(stage: str) -> float:
        return REGISTRY.get_sample_value("reelfab_stage_seconds_count", {"service": "swapper-gpu", "stage": stage}) or 0.0

    w = make_world(tmp_path, settings_overrides={"fused_render": True, "render_label_position": "bottom-right"})
    music = w.store.put_bytes("inputs/music/bed.m4a", b"music")
    ev = job(w, music_uri=music.uri)
    before = {stage: stage_count(stage) for stage in ("consent", "template", "track", "source", "store")}
    await run(w, ev)
    assert w.failed() == []
    [record] = w.uow.on(SWAP_COMPLETED)
    assert record.rendered is True and record.mezzanine_uri.endswith(f"jobs/{ev.record.job_id}/rendered.mp4")
    assert w.store.get_bytes(record.mezzanine_uri, expect_sha256=record.mezzanine_sha256) == b"rendered video"
    order = w.swap.calls[0]["render"]
    assert isinstance(order, RenderOrder)
    assert order.spec.label_position == "bottom-right" and order.spec.label_text  # the deployment's render, labelled
    assert order.music == w.store.local_path(music.uri) and order.caption_text == "Dance, consented"
    assert order.metadata["job_id"] == ev.record.job_id and order.metadata["ai_generated"] == "true"
    assert order.metadata["consent_version"] == "3"  # what the consuming check allowed
    # every step's time is on the stage histogram
    assert all(stage_count(stage) == before[stage] + 1 for stage in before)


async def test_a_completed_job_reaches_the_bus_when_its_unit_commits(world: World) -> None:
    w = world
    await run(w, job(w))
    [raw] = [m for part in w.bus.log.log_for(SWAP_COMPLETED) for m in part]
    assert default_codec().decode(raw.value).value["producer"] == "swapper-gpu"


async def test_a_crash_mid_job_announces_nothing_and_leaves_the_event_for_redelivery(world: World) -> None:
    w = world

    def crash() -> None:
        raise RuntimeError("the GPU fell off the bus")

    w.swap.between = crash
    ev = job(w)
    with pytest.raises(RuntimeError):
        await run(w, ev)
    assert w.uow.published == [] and w.uow.done == {} and list((w.root / "work").iterdir()) == []
    assert not any(p for part in (SWAP_COMPLETED, JOB_FAILED) for p in w.bus.log.log_for(part) if p)
    w.swap.between = None
    await run(w, ev)  # the redelivery does the job
    assert len(w.uow.on(SWAP_COMPLETED)) == 1


async def test_a_swap_that_would_put_the_face_in_too_few_frames_fails_before_the_face_is_read(tmp_path: Path) -> None:
    w = make_world(tmp_path, settings_overrides={"swap_min_swapped_share": 0.95})
    ev = job(w)
    await run(w, ev)  # the template's track: 46 of 50 frames carry the face, 92 %, under the 95 % asked for
    [(code, detail)] = w.failed()
    assert code == "swap_quality"
    assert "swapped in 92% of the frames, under the 95% required" in detail and "3 lost, 1 rejected" in detail
    # judged on the template's track: no swap ran, the face was not read and the daily cap not spent
    assert w.swap.calls == [] and ev.record.source_image_uri not in w.store.reads
    assert [c["consume"] for c in w.gate.calls] == [False]
    assert w.uow.on(SWAP_COMPLETED) == [] and w.job_objects(ev.record.job_id) == []  # nothing kept
    assert not (w.root / "work").exists() or list((w.root / "work").iterdir()) == []


# ------------------------------------------------------------------------------------ decisions


@pytest.mark.parametrize("reason", ["no_consent", "revoked", "out_of_scope_tag"])
async def test_a_consent_denial_fails_the_job_before_any_byte_of_the_face_is_read(world: World, reason: str) -> None:
    w = world
    w.gate.answers = [Decision(False, reason, f"denied: {reason}", 2)]
    ev = job(w)
    await run(w, ev)
    assert w.failed() == [(f"consent.{reason}", f"denied: {reason}")]
    [failed] = w.on(JOB_FAILED)
    assert (failed["stage"], failed["retryable"], failed["subject_id"], failed["job_id"]) == (
        "swapper-gpu", False, "vera", ev.record.job_id)
    assert w.store.reads == [] and w.qc.calls == 0 and w.engines == [] and w.swap.calls == []
    assert len(w.gate.calls) == 1 and not w.gate.calls[0]["consume"]
    assert w.job_objects(ev.record.job_id) == []  # the job's copies of the face are gone with the decision
    assert w.uow.on(SWAP_COMPLETED) == []


async def test_a_consuming_denial_names_the_job_and_purges_its_media(world: World) -> None:
    w = world
    w.gate.answers = [ALLOWED, Decision(False, "daily_cap_reached", "3 uses today; the cap is 3", 3)]
    ev = job(w)
    await run(w, ev)
    assert w.failed() == [("consent.daily_cap_reached", "3 uses today; the cap is 3")]
    assert w.gate.calls[1]["consume"] and w.gate.calls[1]["job_id"] == ev.record.job_id
    assert w.swap.calls == [] and w.job_objects(ev.record.job_id) == []


@pytest.mark.parametrize(("model", "backend", "commercial", "why"), [
    ("mystery_swap", "onnx", False, "not in the model manifest"),
    ("inswapper_128", "onnx", True, "the job is commercial"),
    ("classical", None, True, "the job is commercial"),
    ("classical", "facefusion", False, "cannot serve swap jobs"),
], ids=["unknown", "non-commercial-onnx", "non-commercial-classical", "clip-backend"])
async def test_a_refused_model_fails_the_job(world: World, model: str, backend: str | None, commercial: bool,
                                             why: str) -> None:
    w = world
    ev = job(w, swapper_model=model, backend=backend, commercial=commercial)
    await run(w, ev)
    [(code, detail)] = w.failed()
    assert code == "model_refused" and why in detail
    assert w.store.reads == [] and w.qc.calls == 0 and w.engines == []
    assert w.job_objects(ev.record.job_id) == []  # a failed job is over: its copy of the face goes at once


async def test_a_model_not_installed_here_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path, installed=set())
    await run(w, job(w, swapper_model="ghost_2_256", backend="onnx"))
    [(code, detail)] = w.failed()
    assert code == "model_refused" and "reelfab models pull ghost_2_256" in detail


@pytest.mark.parametrize(("result", "code", "detail"), [
    (QCResult(False, [Reason("duration", "lasts 2.0 s"), Reason("no_face", "no face in any of 10 frames")]),
     "template.no_face", "template QC: duration: lasts 2.0 s; no_face: no face in any of 10 frames"),
    (QCResult(False, [Reason("resolution", "2x2 is too small")]), "template.resolution", "template QC: resolution"),
    (MediaError("moov atom not found"), "template.unreadable", "template template.mp4: moov atom not found"),
], ids=["no-face", "resolution", "unreadable"])
async def test_a_refused_template_fails_the_job_before_the_face_is_fetched(
    world: World, result: QCResult | Exception, code: str, detail: str
) -> None:
    w = world
    w.qc.result = result
    ev = job(w)
    await run(w, ev)
    [(failed_code, failed_detail)] = w.failed()
    assert failed_code == code and failed_detail.startswith(detail)
    assert w.store.reads == [], "the face was fetched for a template that cannot be used"
    assert not any(c["consume"] for c in w.gate.calls), "the daily cap was spent on a template that cannot be used"
    assert w.swap.calls == [] and w.job_objects(ev.record.job_id) == []


async def test_a_template_is_judged_once_per_content_and_engine(world: World) -> None:
    w = world
    w.qc.result = QCResult(False, [Reason("no_face", "no face")])
    first, second = job(w), job(w)  # the same template bytes, two jobs
    await run(w, first)
    await run(w, second)
    assert w.qc.calls == 1 and [c for c, _ in w.failed()] == ["template.no_face"] * 2


@pytest.mark.parametrize("how", ["deleted", "other-bytes"])
async def test_an_unavailable_source_image_fails_the_job(world: World, how: str) -> None:
    w = world
    ev = job(w)
    if how == "deleted":
        w.store.delete(ev.record.source_image_uri)
    else:
        w.store.put_bytes(f"inputs/{ev.record.job_id}/face.png", b"another picture")
    await run(w, ev)
    [(code, _)] = w.failed()
    assert code == "source_unavailable"
    assert not any(c["consume"] for c in w.gate.calls) and w.swap.calls == []


async def test_a_revocation_mid_swap_stops_the_job_and_purges_its_media(world: World) -> None:
    w = world
    w.swap.between = lambda: w.view.revoke("vera")  # the consent topic delivers a revocation mid-clip
    ev = job(w)
    await run(w, ev)
    [(code, detail)] = w.failed()
    assert code == "consent.revoked" and detail.endswith("the swap stopped mid-clip")
    assert w.uow.on(SWAP_COMPLETED) == []
    assert w.job_objects(ev.record.job_id) == []  # face and template copies gone; no mezzanine stored
    assert list((w.root / "work").iterdir()) == []


# ------------------------------------------------------------------------------------ delivery


@pytest.mark.parametrize(("answer", "swaps"), [(ALLOWED, 1), (Decision(False, "revoked", "revoked", 2), 0)],
                         ids=["completed", "failed"])
async def test_a_redelivered_event_is_announced_once(world: World, answer: Decision, swaps: int) -> None:
    w = world
    w.gate.answers = [answer]
    ev = job(w)
    await run(w, ev)
    calls = len(w.gate.calls)
    await run(w, ev)  # the bus redelivers: the outcome committed already
    assert len(w.uow.published) == 1 and w.uow.commits == 1
    assert len(w.gate.calls) == calls and len(w.swap.calls) == swaps  # no second swap, no second use of the cap


@pytest.mark.parametrize("field_, value, error", [
    ("source_image_uri", "file:///etc/hostname", ObjectRefused),
    ("music_uri", "file:///etc/hostname", ObjectRefused),
    ("template_uri", "file:///etc/hostname", ObjectRefused),
    ("template_sha256", "0" * 64, PermanentError),
], ids=["source-outside-store", "music-outside-store", "template-outside-store", "template-not-its-bytes"])
async def test_a_poison_message_raises_for_the_dead_letter_queue(world: World, field_: str, value: str,
                                                                 error: type[Exception]) -> None:
    w = world
    with pytest.raises(error):
        await run(w, job(w, **{field_: value}))
    assert w.uow.published == [] and w.uow.done == {} and w.swap.calls == []
    assert not any(c["consume"] for c in w.gate.calls)


async def test_a_source_that_is_no_image_raises_after_the_consuming_check(world: World) -> None:
    w = world
    ev = job(w)
    junk = w.store.put_bytes(f"inputs/{ev.record.job_id}/face.png", b"not a picture")
    ev = job(w, source_image_uri=junk.uri, source_image_sha256=junk.sha256)
    with pytest.raises(PermanentError, match="not a readable image"):
        await run(w, ev)
    assert w.uow.published == [] and w.swap.calls == []


async def test_on_the_bus_a_job_completes_and_a_poison_one_is_dead_lettered(world: World) -> None:
    w = world
    w.bus.subscribe(SWAP_REQUESTED, handlers.on_swap_requested(w.swapper))
    good, bad = job(w), job(w, music_uri="file:///etc/hostname")
    async with w.bus:
        await w.bus.publish(SWAP_REQUESTED, good.record)
        await w.bus.publish(SWAP_REQUESTED, bad.record)
        await w.bus.wait_idle(5)
    codec = default_codec()
    completed = [codec.decode(m.value).value for p in w.bus.log.log_for(SWAP_COMPLETED) for m in p]
    failed = [codec.decode(m.value).value for p in w.bus.log.log_for(JOB_FAILED) for m in p]
    dead = [m.key for p in w.bus.log.log_for(SWAP_REQUESTED + ".dlq") for m in p]
    assert [c["job_id"] for c in completed] == [good.record.job_id]
    assert dead == [bad.record.job_id.encode()]
    assert [(f["job_id"], f["reason_code"]) for f in failed] == [(bad.record.job_id, "dead_lettered.ObjectRefused")]


def test_wire_subscribes_every_consumed_topic_through_bootstrap(tmp_path: Path) -> None:
    settings = make_settings(state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
                             face_backend="classical")
    ctx = build_context(main.SPEC, settings, InMemoryBus(settings, main.SPEC.name, default_codec()), None, main.wire)
    assert sorted(s.topic.name for s in ctx.bus.subscriptions) == sorted(main.SPEC.consumes)
    swapper = ctx.extras["swapper"]
    assert isinstance(swapper, Swapper) and swapper.uow is ctx.uow
    assert swapper.workdir == tmp_path / "state" / "swapper-work"
