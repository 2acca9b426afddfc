"""The baseline for bench/media.py: the post-production ``reelfab.media.render`` does in one ffmpeg
pass, done the naive way in three (a benchmark helper, not product code):

1. reframe/scale + fps, encoded (audio copied);
2. captions + label + fades, encoded again (audio copied);
3. music mix + loudnorm, muxed with the video copied (faststart, tags).

The filters are render.py's own, so the two differ only in passes, decodes and encodes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reelfab.media.errors import MediaError  # noqa: E402
from reelfab.media.probe import VideoInfo, probe  # noqa: E402
from reelfab.media.render import (  # noqa: E402
    RenderJob,
    RenderResult,
    RenderSpec,
    audio_graph,
    check_inputs,
    fade_filters,
    label_filter,
    metadata_args,
    output_duration,
    reframe_segments,
    subtitles_filter,
    write_captions,
)
from reelfab.media.tools import tool  # noqa: E402


def naive_three_pass(job: RenderJob, spec: RenderSpec) -> RenderResult:
    """Three ffmpeg runs with two intermediate files; ``command`` is the last run's."""
    check_inputs(job)
    info = probe(job.input)
    duration = output_duration(job, info)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reelfab-naive-") as folder:
        scaled, styled = Path(folder) / "scaled.mp4", Path(folder) / "styled.mp4"
        _run(_pass_scale(job, spec, info, duration, scaled))
        captions = write_captions(job, spec, duration, Path(folder))
        _run(_pass_style(scaled, spec, duration, captions, styled))
        last = _pass_audio(job, spec, info, duration, styled)
        _run(last)
    return RenderResult(job.output, time.perf_counter() - started, last)


def _video_codec(spec: RenderSpec) -> list[str]:
    return ["-c:v", "libx264", "-profile:v", spec.profile, "-pix_fmt", spec.pix_fmt,
            "-crf", str(spec.crf), "-preset", spec.preset, "-r", str(spec.fps)]  # fmt: skip


def _pass_scale(job: RenderJob, spec: RenderSpec, info: VideoInfo, duration: float, out: Path) -> list[str]:
    head = f"setpts=PTS-STARTPTS,fps={spec.fps}"
    segments, tail = reframe_segments(spec, info, job.face_track, duration, head)
    graph = ";".join([*segments, f"{tail}setsar=1[v]"])
    audio = ["-map", "0:a:0", "-c:a", "copy"] if info.has_audio else []
    return [tool("ffmpeg"), "-v", "error", "-y", "-i", str(job.input), "-filter_complex", graph,
            "-map", "[v]", *audio, *_video_codec(spec), str(out)]  # fmt: skip


def _pass_style(src: Path, spec: RenderSpec, duration: float, captions: Path | None, out: Path) -> list[str]:
    filters = [subtitles_filter(captions, spec)] if captions else []
    filters += [label_filter(spec.label_text, spec)] if spec.label_text else []
    filters += [*fade_filters("fade", spec, duration), f"format={spec.pix_fmt}"]
    return [tool("ffmpeg"), "-v", "error", "-y", "-i", str(src), "-vf", ",".join(filters),
            "-map", "0:v:0", "-map", "0:a:0?", "-c:a", "copy", *_video_codec(spec), str(out)]  # fmt: skip


def _pass_audio(job: RenderJob, spec: RenderSpec, info: VideoInfo, duration: float, src: Path) -> list[str]:
    music = ["-stream_loop", "-1", "-i", str(job.music)] if job.music else []
    return [tool("ffmpeg"), "-v", "error", "-y", "-i", str(src), *music,
            "-filter_complex", ";".join(audio_graph(job, spec, info, duration)),
            "-map", "0:v:0", "-map", "[a]", "-c:v", "copy",
            "-c:a", spec.audio_codec, "-b:a", spec.audio_bitrate, "-ar", str(spec.sample_rate),
            "-ac", str(spec.channels), "-t", f"{duration:.3f}",
            "-movflags", "+faststart+use_metadata_tags", *metadata_args(job.metadata), str(job.output)]  # fmt: skip


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise MediaError(f"naive pass failed: {proc.stderr.strip()[-400:]}")
