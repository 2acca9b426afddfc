"""swapper-gpu's decisions and its streamed job, without a broker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reelfab.consent.decision import Decision
from reelfab.devtools.synthetic import virtual_person
from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.errors import NoFaceError, SwapQualityError
from reelfab.faces.qc import QCResult, Reason
from reelfab.faces.report import QualityGate
from reelfab.media.frames import read_frames
from reelfab.media.probe import probe
from reelfab.media.tools import tool
from reelfab_swapper_gpu.domain import (
    Failure,
    ModelRefused,
    choose_model,
    consent_failure,
    jobs_that_fit,
    main_template_reason,
    per_job_bytes,
    stopped_mid_clip,
    template_failure,
)
from reelfab_swapper_gpu.swap import Stopped, run_swap
from tests.media_support import ffmpeg_children, video_md5s

MANIFEST = {"ghost_2_256": ("Apache-2.0", True), "inswapper_128": ("non-commercial", False)}


def choose(**kw: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = dict(backend=None, model="classical", default_backend="onnx", commercial_job=False,
                                   commercial_mode=False, manifest=MANIFEST, installed={"ghost_2_256", "inswapper_128"})
    base.update(kw)
    return choose_model(**base)  # type: ignore[arg-type]


def test_model_choice_follows_the_job_and_the_licence() -> None:
    assert choose().backend == "classical"
    assert choose(model="ghost_2_256").model == "ghost_2_256"
    with pytest.raises(ModelRefused, match="not installed"):
        choose(model="ghost_2_256", installed=set())
    with pytest.raises(ModelRefused, match="not in the model manifest"):
        choose(model="mystery_swap")
    with pytest.raises(ModelRefused, match="the job is commercial"):
        choose(model="inswapper_128", commercial_job=True)
    with pytest.raises(ModelRefused, match="commercial mode"):
        choose(commercial_mode=True)  # the classical models' licence is non-commercial too


def test_decisions_become_the_jobs_failure_codes() -> None:
    assert consent_failure(Decision(True, "ok", "fine", 2)) is None
    denied = consent_failure(Decision(False, "daily_cap_reached", "3 of 3 today", 2))
    assert denied == Failure("consent.daily_cap_reached", "3 of 3 today") and denied.purges_media
    assert denied.outcome == "consent" and Failure("template.no_face", "").purges_media
    assert template_failure(QCResult(True)) is None
    verdict = template_failure(QCResult(False, [Reason("duration", "too short"), Reason("face_hidden", "30%")]))
    assert verdict == Failure("template.face_hidden", "template QC: duration: too short; face_hidden: 30%")
    assert main_template_reason(["blurry"]) == "blurry" and main_template_reason([]) == "rejected"
    assert stopped_mid_clip(None) is None
    assert stopped_mid_clip(("revoked", "consent of s is revoked")) == ("revoked", "consent of s is revoked: the swap stopped mid-clip")


def test_memory_budget_bounds_concurrency() -> None:
    per = per_job_bytes(1080, 1920, 8)
    assert jobs_that_fit(2 * 2**30, per) == 2 * 2**30 // per == 4
    assert jobs_that_fit(1, per) == 1 and jobs_that_fit(10**15, per) == 8


def _silent_odd_clip(path: Path) -> Path:
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1",
                    "-vf", "scale=321:241", "-pix_fmt", "yuv444p", "-c:v", "ffv1", str(path)], check=True)
    return path


def test_a_template_without_audio_or_faces_at_an_odd_size_passes_through_losslessly(tmp_path: Path) -> None:
    clip = _silent_odd_clip(tmp_path / "odd.mkv")
    with pytest.raises(SwapQualityError, match=r"swapped in 0% of the frames.*25 lost") as refused:
        run_swap(ClassicalEngine(), virtual_person(1, size=1024), clip, tmp_path)  # the default gate: 80 %
    assert refused.value.report.lost == 25  # type: ignore[attr-defined]
    out = run_swap(ClassicalEngine(), virtual_person(1, size=1024), clip, tmp_path, gate=QualityGate(0.0))
    info = probe(out.video)
    assert (info.width, info.height, info.codec, info.has_audio) == (321, 241, "h264", False)
    assert out.frames == 25 and out.frames_with_face == 0
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(clip), read_frames(out.video), strict=True))
    track = json.loads(out.track.read_text())
    assert track["frames"] == [None] * 25 and (track["width"], track["height"]) == (321, 241)
    assert track["statuses"] == ["lost"] * 25 and track["report"]["lost"] == 25


def test_a_revocation_mid_job_stops_it_and_leaves_no_mezzanine(tmp_path: Path) -> None:
    clip = _silent_odd_clip(tmp_path / "odd.mkv")
    asked = []

    def should_stop() -> tuple[str, str] | None:
        asked.append(1)
        return ("revoked", "consent of s was revoked") if len(asked) >= 2 else None

    with pytest.raises(Stopped, match="revoked") as stopped:
        run_swap(ClassicalEngine(), virtual_person(1, size=1024), clip, tmp_path, batch_size=4, should_stop=should_stop,
                 gate=QualityGate(0.0))  # a faceless clip: the gate (judged before the swap) would refuse it first
    assert stopped.value.reason == "revoked"
    assert not (tmp_path / "mezzanine.mkv").exists()


# ------------------------------------------------------------------------------------ fused mode


@pytest.fixture(scope="module")
def dance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from reelfab.devtools.synthetic import music_bed, template_clip

    folder = tmp_path_factory.mktemp("fused")
    return (template_clip(folder / "t.mp4", seed=4, seconds=1.2, size=(288, 512)).path,
            music_bed(folder / "bed.m4a", seed=4, seconds=3.0))


def test_fused_mode_renders_what_the_mezzanine_path_renders_with_one_encode(tmp_path: Path, dance: tuple[Path, Path]) -> None:
    from reelfab.faces.template_track import track_template
    from reelfab.media.render import RenderJob, RenderSpec, render
    from reelfab.media.spec_check import verify
    from reelfab_swapper_gpu.swap import RenderOrder

    template, music = dance
    engine, face = ClassicalEngine(), virtual_person(2, size=512)
    track = track_template(engine, template)
    tags = {"job_id": "job-1", "consent_version": "2", "ai_generated": "true"}
    (tmp_path / "m").mkdir()
    (tmp_path / "f").mkdir()
    mezzanine = run_swap(engine, face, template, tmp_path / "m", track=track)
    assert not mezzanine.rendered and probe(mezzanine.video).codec == "h264"  # lossless H.264 RGB
    two_step = tmp_path / "two-step.mp4"
    render(RenderJob(input=mezzanine.video, output=two_step, duration_s=track.info.duration_s, music=music,
                     caption_text="made with consent", face_track=json.loads(mezzanine.track.read_text()),
                     metadata=tags), RenderSpec())
    fused = run_swap(engine, face, template, tmp_path / "f", track=track,
                     render=RenderOrder(RenderSpec(), music, "made with consent", tags))
    assert fused.rendered and fused.video.name == "render.mp4" and not (tmp_path / "f" / "mezzanine.mkv").exists()
    assert fused.report.as_dict() == mezzanine.report.as_dict() and fused.report.swapped > 0
    check = verify(fused.video, RenderSpec(), track.info.duration_s)
    assert check.passed, check.problems
    assert check.metadata["job_id"] == "job-1" and check.metadata["ai_generated"] == "true"
    assert video_md5s(fused.video) == video_md5s(two_step)  # the same picture, frame for frame
    assert {"decode", "swap", "encode", "finish"} <= set(fused.stages) and all(v >= 0 for v in fused.stages.values())
    assert fused.track.read_text() == mezzanine.track.read_text()


def test_a_revocation_mid_fused_render_stops_it_and_leaves_nothing(tmp_path: Path, dance: tuple[Path, Path]) -> None:
    from reelfab.media.render import RenderSpec
    from reelfab_swapper_gpu.swap import RenderOrder

    template, music = dance
    asked: list[int] = []

    def should_stop() -> tuple[str, str] | None:
        asked.append(1)
        return ("revoked", "consent of s was revoked") if len(asked) >= 3 else None

    with pytest.raises(Stopped, match="revoked"):
        run_swap(ClassicalEngine(), virtual_person(2, size=512), template, tmp_path, batch_size=4,
                 should_stop=should_stop, render=RenderOrder(RenderSpec(), music, "x", {}))
    assert not (tmp_path / "render.mp4").exists() and len(asked) == 3
    assert ffmpeg_children() == []


def test_a_source_without_a_face_fails_the_fused_swap_and_leaves_nothing_running(tmp_path: Path, dance: tuple[Path, Path]) -> None:
    import threading

    from reelfab.media.render import RenderSpec
    from reelfab_swapper_gpu.swap import RenderOrder

    template, music = dance
    blank = np.full((512, 512, 3), 128, np.uint8)  # no face: found wanting while both ffmpegs start
    with pytest.raises(NoFaceError):
        run_swap(ClassicalEngine(), blank, template, tmp_path, render=RenderOrder(RenderSpec(), music, None, {}))
    assert not (tmp_path / "render.mp4").exists() and ffmpeg_children() == []
    assert [t for t in threading.enumerate() if t.name in ("read-ahead", "write-behind")] == []
