"""Fused rendering: swapped frames piped straight into the final render (``FrameRender``), no mezzanine.

The fused output must be what ``render`` makes from a lossless mezzanine of the same frames (the same
graph and the one lossy encode), so the decoded pictures of the two are compared frame by frame. Clips
are 1.2 s at 360×640 (and 640×360) and the spec uses preset superfast, to keep the module quick."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from reelfab.devtools.synthetic import TemplateClip, music_bed, template_clip
from reelfab.media.errors import MediaError
from reelfab.media.frames import FrameWriter, read_frames
from reelfab.media.probe import VideoInfo, probe
from reelfab.media.render import FrameRender, RenderJob, RenderResult, RenderSpec, build_command, render
from reelfab.media.spec_check import verify
from tests.media_support import ffmpeg_children, mean_volume, video_md5s

SPEC = RenderSpec(preset="superfast")
METADATA = {"job_id": "job-9", "consent_version": "3", "ai_generated": "true"}
SECONDS = 1.2
FRAMES = 30  # 1.2 s at 25 fps


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frame-render")
    music_bed(folder / "music.m4a", seed=3, seconds=0.8)  # shorter than the clips: it has to loop
    return folder


@pytest.fixture(scope="module")
def portrait(media: Path) -> tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]:
    """A 9:16 template with audio, and its frames as the swapper would write them."""
    clip = template_clip(media / "portrait.mp4", seed=1, seconds=SECONDS, size=(360, 640))
    info = probe(clip.path)
    return clip, info, list(read_frames(clip.path, info=info))


@pytest.fixture(scope="module")
def landscape(media: Path) -> tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]:
    """16:9 and silent: reframed, and the music is input 1 (no template audio input)."""
    clip = template_clip(media / "landscape.mp4", seed=2, seconds=SECONDS, size=(640, 360), with_audio=False)
    info = probe(clip.path)
    return clip, info, list(read_frames(clip.path, info=info))


@pytest.fixture(scope="module")
def fused(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> tuple[RenderJob, RenderResult]:
    clip, info, frames = portrait
    job = RenderJob(clip.path, media / "fused.mp4", duration_s=info.duration_s, music=media / "music.m4a",
                    caption_text="HELLO FUSED CAPTIONS", metadata=METADATA)  # fmt: skip
    with FrameRender(job, SPEC, info, log_dir=media / "logs") as sink:
        for frame in frames:
            sink.write(frame)
    return job, sink.close()  # close again: the same result


def _graph(command: list[str]) -> str:
    return command[command.index("-filter_complex") + 1]


def _video_graph(command: list[str]) -> str:
    """The graph up to [v], the captions' temp folder named alike."""
    return re.sub(r"reelfab-render-\w+", "reelfab-render-X", _graph(command).split("[v]")[0])


# ------------------------------------------------------------------------------- the fused output


def test_fused_render_meets_the_delivery_spec(fused: tuple[RenderJob, RenderResult], media: Path) -> None:
    job, result = fused
    check = verify(result.output, SPEC, expected_duration_s=SECONDS)
    assert check.passed, check.problems
    assert (check.width, check.height, check.fps, check.pix_fmt) == (1080, 1920, 25.0, "yuv420p")
    assert (check.audio_codec, check.sample_rate, check.channels) == ("aac", 48000, 2)
    assert {k: check.metadata.get(k) for k in METADATA} == METADATA
    assert len(video_md5s(result.output)) == FRAMES
    # one ffmpeg: frames on stdin, the template for audio only, the music looped
    cmd = result.command
    assert cmd[cmd.index("pipe:0") - 1] == "-i" and cmd[cmd.index(str(job.input)) - 2] == "-vn"
    assert cmd[cmd.index("-stream_loop") + 3] == str(job.music)
    assert "[1:a:0]asetpts" in _graph(cmd) and "[2:a:0]aresample" in _graph(cmd)
    srt = re.search(r"subtitles=filename=([^:]+)", _graph(cmd))
    assert srt and not Path(srt.group(1)).parent.exists()  # the temp folder is gone after close
    assert (media / "logs" / "render-ffmpeg.log").is_file()


def test_captions_and_looped_music_reach_the_output(fused: tuple[RenderJob, RenderResult]) -> None:
    _, result = fused
    frame = next(read_frames(result.output, start_s=0.6, max_frames=1))
    white: NDArray[np.bool_] = np.asarray((frame > 235).all(axis=2))
    assert white[1200:1600].sum() > 1000, "no white caption text in the caption band"
    assert mean_volume(result.output, 0.6) > -40.0  # the 0.8 s music and the template's audio to the end


@pytest.mark.parametrize("codec", ["ffv1", "x264rgb-lossless"])
def test_fused_equals_render_of_a_lossless_mezzanine(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]],
    fused: tuple[RenderJob, RenderResult], codec: str,
) -> None:  # fmt: skip
    """Bit-exact: the mezzanine decodes to the very frames piped in, and both runs give the graph the same
    pictures at the same times. (Not guaranteed for a template at a fractional rate such as 29.97 fps:
    Matroska keeps the mezzanine's timestamps in whole milliseconds, and where that rounding crosses half
    an output frame the fps filter picks the neighbouring frame; the fused path's times are exact.)"""
    clip, info, frames = portrait
    fused_job, fused_result = fused
    mezzanine = media / f"mezzanine-{codec}.mkv"
    with FrameWriter(mezzanine, info.width, info.height, info.fps, codec=codec, audio_from=clip.path) as writer:
        for frame in frames:
            writer.write(frame)
    job = RenderJob(mezzanine, media / f"from-{codec}.mp4", duration_s=info.duration_s, music=fused_job.music,
                    caption_text=fused_job.caption_text, metadata=METADATA)  # fmt: skip
    result = render(job, SPEC)
    reference = video_md5s(result.output)
    assert len(reference) == FRAMES and video_md5s(fused_result.output) == reference
    # the same video graph but for the fused one's hold of a short stream (a no-op on a full one)
    hold = "tpad=stop_mode=clone:stop_duration=1.200,"
    assert _video_graph(fused_result.command).replace(hold, "") == _video_graph(result.command)


def test_a_short_stream_holds_its_last_frame_to_the_duration(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> None:
    clip, info, frames = portrait
    job = RenderJob(clip.path, media / "short.mp4", duration_s=info.duration_s)
    spec = RenderSpec(preset="superfast", label_text=None, fade_out_s=0.0)
    with FrameRender(job, spec, info) as sink:
        for frame in frames[:20]:  # 0.8 s of 1.2
            sink.write(frame)
    assert verify(job.output, spec, expected_duration_s=SECONDS).passed
    out = [f.astype(np.int16) for f in read_frames(job.output, size=(180, 320))]
    assert len(out) == FRAMES
    held = [float(np.abs(f - out[19]).mean()) for f in out[20:]]  # the 20th frame, held (lossy: near)
    moved = float(np.abs(out[19] - out[10]).mean())
    assert max(held) < 1.0 < moved, (held, moved)


# ------------------------------------------------------------------------------ reframed sources


@pytest.mark.parametrize("mode", ["face", "blur"])
def test_a_landscape_template_is_reframed(
    media: Path, landscape: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]], mode: str
) -> None:
    clip, info, frames = landscape
    track = {"version": 1, "width": info.width, "height": info.height, "fps": info.fps,
             "frames": [{"box": [x - 40, y - 50, x + 40, y + 50]} for x, y in clip.centers]}  # fmt: skip
    spec = RenderSpec(preset="superfast", reframe=mode)  # type: ignore[arg-type]
    job = RenderJob(clip.path, media / f"landscape-{mode}.mp4", duration_s=info.duration_s,
                    music=media / "music.m4a", face_track=track)  # fmt: skip
    with FrameRender(job, spec, info) as sink:
        for frame in frames:
            sink.write(frame)
    result = sink.close()
    check = verify(job.output, spec, expected_duration_s=SECONDS)
    assert check.passed, (mode, check.problems)
    graph = _graph(result.command)
    assert str(clip.path) not in result.command  # a silent template is no input: anullsrc, music is input 1
    assert "anullsrc" in graph and "[1:a:0]aresample" in graph
    frame = next(read_frames(job.output, start_s=0.6, max_frames=1))
    if mode == "face":
        assert re.search(r"\[0:v:0\]setpts=PTS-STARTPTS,fps=25,tpad=[^,]+,crop=202:360:", graph)
        assert frame[:200].mean() > 20, "face mode: the crop fills the picture"
    else:
        assert "[0:v:0]setpts=PTS-STARTPTS,fps=25,tpad=stop_mode=clone:stop_duration=1.200,split=2" in graph
        assert frame[300:400].mean() > 20, "blur mode: the background is filled"
    assert mean_volume(job.output, 0.6) > -40.0  # the looped music, on a template without audio


def test_the_stream_labels_are_parameters(portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]) -> None:
    clip, info, _ = portrait
    job = RenderJob(clip.path, Path("/tmp/out.mp4"), music=Path("/tmp/music.m4a"))
    landscape = dataclasses.replace(info, width=640, height=360)
    for spec in (RenderSpec(), RenderSpec(reframe="face"), RenderSpec(reframe="blur"), RenderSpec(reframe="pad")):
        for source in (info, landscape):
            default = build_command(job, spec, source)
            moved = build_command(job, spec, source, inputs=["-i", "x"], video="[3:v:0]", audio="[4:a:0]",
                                  music="[5:a:0]")  # fmt: skip
            assert default[:default.index("-i")] == moved[:moved.index("-i")]
            assert default[default.index("-filter_complex") + 2 :] == moved[moved.index("-filter_complex") + 2 :]
            expected = _graph(default)
            assert "[0:v:0]" in expected and "[0:a:0]" in expected and "[1:a:0]" in expected
            for old, new in (("[0:v:0]", "[3:v:0]"), ("[0:a:0]", "[4:a:0]"), ("[1:a:0]", "[5:a:0]")):
                expected = expected.replace(old, new)
            assert _graph(moved) == expected


# ------------------------------------------------------------------------------------------ errors


def test_a_frame_of_the_wrong_shape_is_refused_and_leaves_nothing(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> None:
    clip, info, frames = portrait
    out = media / "wrong-shape.mp4"
    job = RenderJob(clip.path, out)
    with pytest.raises(MediaError, match=re.escape("(640, 361, 3)")), FrameRender(job, SPEC, info) as sink:
        sink.write(frames[0])
        sink.write(np.zeros((640, 361, 3), np.uint8))
    with pytest.raises(MediaError, match=re.escape("(640, 360, 3) float32")), FrameRender(job, SPEC, info) as sink:
        sink.write(frames[0].astype(np.float32))
    assert not out.exists() and not ffmpeg_children()


def test_an_exception_in_the_block_or_abort_leaves_no_output_and_no_ffmpeg(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> None:
    clip, info, frames = portrait
    out = media / "aborted.mp4"
    job = RenderJob(clip.path, out, caption_text="hi")
    with pytest.raises(RuntimeError, match="swap failed"), FrameRender(job, SPEC, info) as sink:
        for frame in frames[:10]:
            sink.write(frame)
        assert ffmpeg_children() and out.parent.exists()
        raise RuntimeError("swap failed")
    assert not out.exists() and not ffmpeg_children()
    srt = re.search(r"subtitles=filename=([^:]+)", _graph(sink.command))
    assert srt and not Path(srt.group(1)).parent.exists()

    sink = FrameRender(RenderJob(clip.path, out), SPEC, info)
    for frame in frames[:10]:
        sink.write(frame)
    sink.abort()
    sink.abort()  # idempotent
    assert not out.exists() and not ffmpeg_children()
    with pytest.raises(MediaError, match="aborted"):
        sink.write(frames[0])
    with pytest.raises(MediaError, match="aborted"):
        sink.close()


def test_an_ffmpeg_failure_reports_stderr_and_removes_the_partial_output(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> None:
    clip, info, frames = portrait
    out = media / "failed.mp4"
    out.write_bytes(b"stale")
    with pytest.raises(MediaError, match="(?is)ffmpeg failed rendering .*failed.mp4.*preset"):
        with FrameRender(RenderJob(clip.path, out), RenderSpec(preset="no-such-preset"), info) as sink:
            for frame in frames:
                sink.write(frame)
    assert not out.exists() and not ffmpeg_children()


def test_an_ffmpeg_killed_mid_render_is_a_transient_error_naming_the_signal(
    media: Path, portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]]
) -> None:
    import signal

    from reelfab.errors import TransientError

    clip, info, frames = portrait
    out = media / "killed.mp4"
    with pytest.raises(TransientError, match=r"ffmpeg was killed \(SIGKILL\) while rendering .*killed.mp4"):
        with FrameRender(RenderJob(clip.path, out), SPEC, info) as sink:
            for i, frame in enumerate(frames * 50):  # as the OOM killer would, a few frames in
                if i == 5:
                    os.kill(sink._proc.pid, signal.SIGKILL)
                sink.write(frame)
    assert not out.exists() and not ffmpeg_children()


def test_the_output_may_not_overwrite_the_template(
    portrait: tuple[TemplateClip, VideoInfo, list[NDArray[Any]]],
) -> None:
    clip, info, _ = portrait
    with pytest.raises(MediaError, match="overwrite the input"):
        FrameRender(RenderJob(clip.path, clip.path), SPEC, info)
    assert not ffmpeg_children()
