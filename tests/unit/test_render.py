"""One-pass post-production: the delivery spec, tags, audio without a source track, looped music,
face-following reframe, captions from awkward paths, and the errors bad inputs get.

Renders are full 1080×1920 encodes, so each input is rendered once per module and asserted on by
several tests; the spec uses preset superfast (still High profile) to keep the module quick."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reelfab.media.errors import MediaError
from reelfab.media.frames import read_frames
from reelfab.media.probe import probe
from reelfab.media.render import (
    RenderJob,
    RenderResult,
    RenderSpec,
    RenderStopped,
    build_command,
    caption_chunks,
    crop_x_expression,
    face_centres,
    fade_filters,
    moving_average,
    render,
    srt_from_text,
)
from reelfab.media.spec_check import verify
from reelfab.media.tools import tool
from tests.media_support import ffmpeg_children, mean_volume

SPEC = RenderSpec(preset="superfast")
METADATA = {"job_id": "job-123", "consent_version": "7", "ai_generated": "true"}
SQUARE = 160  # the moving "face" in the landscape clip
SQUARE_Y = 280


def _ffmpeg(*args: str) -> None:
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", *args], check=True)


def _testsrc(path: Path, size: str, rate: int, seconds: float = 6.0, audio: bool = True, *extra: str) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    _ffmpeg(*args, *extra, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def _moving_square(path: Path, seconds: float = 6.0, rate: int = 30) -> Path:
    """1280×720, no audio: a white square whose left edge moves from x=100 to x=1020."""
    graph = (
        f"color=c=black:s=1280x720:r={rate}:d={seconds}[bg];color=c=white:s={SQUARE}x{SQUARE}:r={rate}[sq];"
        f"[bg][sq]overlay=x='100+t*920/{seconds}':y={SQUARE_Y}:shortest=1"
    )
    _ffmpeg(
        "-filter_complex", graph, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)
    )
    return path


def _square_track(seconds: float = 6.0, rate: int = 30) -> dict:
    frames = []
    for i in range(round(seconds * rate)):
        x = 100 + (i / rate) * 920 / seconds
        frames.append(
            {"box": [x, SQUARE_Y, x + SQUARE, SQUARE_Y + SQUARE], "kps5": [[x, SQUARE_Y]] * 5, "score": 0.9}
        )
    frames[40] = None  # a missed detection is interpolated over
    return {"version": 1, "width": 1280, "height": 720, "fps": rate, "frames": frames}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("render")
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=220:duration=2", "-c:a", "libmp3lame", str(folder / "music.mp3")
    )
    return folder


@pytest.fixture(scope="module")
def portrait(media: Path) -> Iterator[tuple[RenderJob, RenderResult]]:
    """720×1280 at 25 fps with audio; captions from an SRT whose path has ' : and ,."""
    source = _testsrc(media / "portrait.mp4", "720x1280", 25)
    odd = media / "it's: a, folder"
    odd.mkdir()
    srt = odd / "cap: it's, here.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:06,000\nHELLO CAPTIONS\n", encoding="utf-8")
    job = RenderJob(source, media / "portrait-out.mp4", duration_s=probe(source).duration_s, music=media / "music.mp3",
                    caption_srt=srt, metadata=METADATA)  # fmt: skip
    yield job, render(job, SPEC)


@pytest.fixture(scope="module")
def landscape(media: Path) -> tuple[RenderJob, RenderResult]:
    """1280×720 at 30 fps without audio, a square moving left to right and its face track; short music."""
    source = _moving_square(media / "square.mp4")
    job = RenderJob(source, media / "square-out.mp4", duration_s=6.0, music=media / "music.mp3",
                    face_track=_square_track(), metadata=METADATA)  # fmt: skip
    return job, render(job, RenderSpec(preset="superfast", reframe="face", label_text=None))


# ---------------------------------------------------------------------------------- delivery spec


def test_portrait_render_meets_the_delivery_spec(portrait: tuple[RenderJob, RenderResult]) -> None:
    job, result = portrait
    check = verify(result.output, SPEC, expected_duration_s=probe(job.input).duration_s)
    assert check.passed, check.problems
    assert (check.width, check.height, check.fps) == (1080, 1920, 25.0)
    assert (check.video_codec, check.video_profile, check.pix_fmt) == ("h264", "High", "yuv420p")
    assert (check.audio_codec, check.sample_rate, check.channels) == ("aac", 48000, 2)
    assert check.faststart


def test_metadata_tags_survive(portrait: tuple[RenderJob, RenderResult]) -> None:
    _, result = portrait
    check = verify(result.output, SPEC, expected_duration_s=6.0)
    assert {k: check.metadata.get(k) for k in METADATA} == METADATA


def test_one_ffmpeg_process_and_the_temp_srt_is_gone(portrait: tuple[RenderJob, RenderResult]) -> None:
    _, result = portrait
    assert result.command.count("-filter_complex") == 1 and result.seconds > 0
    srt_arg = re.search(
        r"subtitles=filename=([^:]+)", result.command[result.command.index("-filter_complex") + 1]
    )
    assert srt_arg and not Path(srt_arg.group(1)).exists()  # a safe copy, deleted afterwards
    assert "it's" not in srt_arg.group(1)


def test_captions_from_an_awkward_path_are_burned_in(portrait: tuple[RenderJob, RenderResult]) -> None:
    _, result = portrait
    frame = next(read_frames(result.output, start_s=3.0, max_frames=1))
    white = (frame > 235).all(axis=2)
    caption_band = white[1200:1600]  # the captions sit ~430 px above the bottom
    assert caption_band.sum() > 2000, "no white caption text in the caption band"


def test_template_without_audio_gets_aac_and_short_music_is_looped(
    landscape: tuple[RenderJob, RenderResult],
) -> None:
    job, result = landscape
    check = verify(result.output, SPEC, expected_duration_s=6.0)
    assert check.passed, check.problems
    assert not probe(job.input).has_audio and check.audio_codec == "aac"
    # The 2 s music, looped, still plays in the last second (silence would read about -91 dB).
    assert mean_volume(result.output, 1.0) > -40.0


def test_face_reframe_keeps_the_moving_square_near_the_centre(
    landscape: tuple[RenderJob, RenderResult],
) -> None:
    _, result = landscape
    offsets = []
    for n, frame in enumerate(read_frames(result.output, size=(270, 480))):
        if n % 10 or n < 15 or n > 135:  # skip the fades
            continue
        columns = np.nonzero((frame.max(axis=2) > 128).any(axis=0))[0]
        assert columns.size, f"frame {n}: the square left the picture"
        offsets.append(abs((columns.min() + columns.max()) / 2 - 135))
    # The square crossed 920 px of a 1280 px picture; the 9:16 window followed it.
    assert max(offsets) < 25, offsets


def test_vfr_landscape_with_blur_and_pad(media: Path) -> None:
    source = _testsrc(media / "vfr.mp4", "640x480", 30, 3.0, True, "-vf", "select='lt(n\\,45)+not(mod(n\\,2))'",
                      "-fps_mode", "vfr")  # fmt: skip
    info = probe(source)
    assert info.variable_frame_rate
    for mode in ("blur", "pad"):
        spec = RenderSpec(preset="superfast", reframe=mode, label_text="AI: it's, [generated]; ok")
        job = RenderJob(source, media / f"vfr-{mode}.mp4", caption_text="Words: commas, quotes' and {braces}")
        render(job, spec)
        check = verify(job.output, spec, expected_duration_s=info.duration_s)
        assert check.passed, (mode, check.problems)
    frame = next(read_frames(media / "vfr-pad.mp4", start_s=1.0, max_frames=1))
    assert frame[:75].max() < 30 and frame[-150:].max() < 30, "pad mode: black bars above and below"
    frame = next(read_frames(media / "vfr-blur.mp4", start_s=1.0, max_frames=1))
    assert frame[300:400].mean() > 30, "blur mode: the background is filled"


# ------------------------------------------------------------------------------------------ errors


def test_missing_music_fails_before_ffmpeg_runs(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ffmpeg(*args: object, **kwargs: object) -> None:
        raise AssertionError("ffmpeg must not run")

    monkeypatch.setattr(subprocess, "run", no_ffmpeg)
    monkeypatch.setattr(subprocess, "Popen", no_ffmpeg)
    job = RenderJob(media / "whatever.mp4", media / "x.mp4", music=media / "no-such-music.mp3")
    with pytest.raises(MediaError, match="no-such-music.mp3"):
        render(job, SPEC)


def test_corrupt_input_raises_with_ffmpegs_message(media: Path) -> None:
    bad = media / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    with pytest.raises(MediaError, match="(?i)invalid data|moov atom"):
        render(RenderJob(bad, media / "corrupt-out.mp4"), SPEC)
    assert not (media / "corrupt-out.mp4").exists()


def test_ffmpeg_failure_reports_stderr_and_removes_the_partial_output(media: Path) -> None:
    source = _testsrc(media / "tiny.mp4", "320x568", 25, 1.0)
    out = media / "tiny-out.mp4"
    out.write_bytes(b"stale")
    with pytest.raises(MediaError, match="(?is)ffmpeg failed rendering .*tiny-out.mp4.*preset"):
        render(RenderJob(source, out), RenderSpec(preset="no-such-preset"))
    assert not out.exists()


def test_a_stop_answer_kills_the_running_ffmpeg_and_removes_the_partial_output(media: Path) -> None:
    source = _testsrc(media / "long.mp4", "360x640", 25, 60.0, False)  # a minute: far longer than we wait
    out = media / "long-out.mp4"
    asked: list[float] = []
    started = time.monotonic()

    def should_stop() -> tuple[str, str] | None:
        asked.append(time.monotonic())
        if out.exists() and time.monotonic() - started > 0.5:  # ffmpeg is writing: consent withdrawn now
            return "revoked", "consent v2 of s was revoked"
        return None

    with pytest.raises(RenderStopped, match="revoked") as stopped:
        render(RenderJob(source, out, metadata=METADATA), SPEC, should_stop=should_stop, poll_s=0.05)
    assert stopped.value.reason == "revoked"
    assert time.monotonic() - asked[-1] < 1.0, "ffmpeg was waited for after the stop"
    assert time.monotonic() - started < 10.0 and len(asked) > 2
    assert not out.exists()
    assert not ffmpeg_children()


def test_a_stop_answer_before_the_render_starts_runs_no_ffmpeg(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ffmpeg(*args: object, **kwargs: object) -> None:
        raise AssertionError("ffmpeg must not run")

    monkeypatch.setattr(subprocess, "Popen", no_ffmpeg)
    with pytest.raises(RenderStopped):
        render(RenderJob(media / "whatever.mp4", media / "y.mp4"), SPEC, should_stop=lambda: ("erased", "erased"))


# ------------------------------------------------------------------------------------ the pieces


def test_command_shape(media: Path) -> None:
    source = _testsrc(media / "shape.mp4", "1280x720", 30, 1.0, False)
    job = RenderJob(
        source, media / "shape-out.mp4", duration_s=1.2, music=media / "music.mp3", metadata=METADATA
    )
    cmd = build_command(job, RenderSpec(reframe="pad"), probe(source))
    graph = cmd[cmd.index("-filter_complex") + 1]
    assert cmd[cmd.index("-stream_loop") + 3] == str(job.music)
    assert "anullsrc=r=48000" in graph and "amix=inputs=2:duration=first:normalize=0" in graph
    assert "loudnorm=I=-14:TP=-1.5:LRA=11,aresample=48000" in graph
    assert "tpad=stop_mode=clone" in graph  # template 0.2 s longer than the mezzanine
    assert "fade=t=out:st=0.700" in graph and "afade=t=out:st=0.700" in graph
    assert cmd[cmd.index("-t") + 1] == "1.200"
    assert "+faststart+use_metadata_tags" in cmd and "job_id=job-123" in cmd
    with pytest.raises(ValueError, match="write_captions"):
        build_command(RenderJob(source, job.output, caption_text="hi"), RenderSpec(), probe(source))


def test_crop_path_is_piecewise_linear_and_smoothed() -> None:
    assert crop_x_expression([(0.0, 100), (0.5, 100), (1.0, 200)]) == "100+100*clip((t-0.500)/0.500,0,1)"
    jitter = np.array([500.0, 520.0] * 25)
    assert np.ptp(moving_average(jitter, 10)[10:-10]) < np.ptp(jitter) / 5
    ramp = np.arange(50, dtype=float)
    assert np.allclose(moving_average(ramp, 5)[5:-5], ramp[5:-5])  # no lag on steady motion
    track = {"width": 640, "frames": [{"box": [0, 0, 20, 20]}, None, None, {"box": [60, 0, 80, 20]}]}
    assert face_centres(track, 1280) == pytest.approx([20.0, 60.0, 100.0, 140.0])
    assert face_centres({"width": 640, "frames": [None, None]}, 640) is None
    held = {"width": 1280, "frames": [None, {"box": [10, 0, 30, 20]}, None, {"box": [50, 0, 70, 20]}, None]}
    assert face_centres(held, 1280) == pytest.approx([20.0, 20.0, 40.0, 60.0, 60.0])  # ends held, gap linear


def test_caption_text_is_chunked_over_the_clip() -> None:
    srt = srt_from_text("one two three four five six seven eight nine ten", 4.0, 14)
    assert srt.startswith("1\n00:00:00,000 --> ") and srt.rstrip().endswith("nine ten")
    assert "--> 00:00:04,000\n" in srt
    assert caption_chunks("a {\\b1}bold <i>x</i>", 40) == ["a b1bold ix/i"]


def test_fades_shrink_on_very_short_clips() -> None:
    assert fade_filters("fade", SPEC, 0.5) == ["fade=t=in:st=0:d=0.250", "fade=t=out:st=0.250:d=0.250"]


def test_spec_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="reframe"):
        RenderSpec(reframe="zoom")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label_position"):
        RenderSpec(label_position="middle")  # type: ignore[arg-type]
